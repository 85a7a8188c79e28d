// WebAuthn and passkey helpers for self-service forms, served at /.well-known/ory/webauthn.js.
// Same contract as Kratos' script: UI nodes name these helpers in onclickTrigger / onloadTrigger;
// each calls navigator.credentials.create/get with the options the flow carries, writes the
// result as JSON into the hidden input (webauthn_register, webauthn_login, passkey_register,
// passkey_login, passkey_settings_register) and submits the form.
"use strict";
(function () {
  if (typeof window === "undefined" || window.__oryWebAuthnInitialized) {
    return;
  }

  function decode(value) {
    var text = String(value).replace(/-/g, "+").replace(/_/g, "/");
    while (text.length % 4) {
      text += "=";
    }
    return Uint8Array.from(atob(text), function (c) {
      return c.charCodeAt(0);
    });
  }

  function encode(buffer) {
    if (!buffer) {
      return "";
    }
    var bytes = new Uint8Array(buffer);
    var text = "";
    for (var i = 0; i < bytes.length; i++) {
      text += String.fromCharCode(bytes[i]);
    }
    return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function decodeIds(list) {
    return (list || []).map(function (item) {
      return Object.assign({}, item, { id: decode(item.id) });
    });
  }

  function prepareCreate(opt) {
    opt.publicKey.user.id = decode(opt.publicKey.user.id);
    opt.publicKey.challenge = decode(opt.publicKey.challenge);
    if (opt.publicKey.excludeCredentials) {
      opt.publicKey.excludeCredentials = decodeIds(opt.publicKey.excludeCredentials);
    }
    return opt;
  }

  function prepareGet(opt) {
    opt.publicKey.challenge = decode(opt.publicKey.challenge);
    if (opt.publicKey.allowCredentials) {
      opt.publicKey.allowCredentials = decodeIds(opt.publicKey.allowCredentials);
    }
    return opt;
  }

  function attestation(credential) {
    return JSON.stringify({
      id: credential.id,
      rawId: encode(credential.rawId),
      type: credential.type,
      response: {
        attestationObject: encode(credential.response.attestationObject),
        clientDataJSON: encode(credential.response.clientDataJSON),
      },
    });
  }

  function assertion(credential) {
    return JSON.stringify({
      id: credential.id,
      rawId: encode(credential.rawId),
      type: credential.type,
      response: {
        authenticatorData: encode(credential.response.authenticatorData),
        clientDataJSON: encode(credential.response.clientDataJSON),
        signature: encode(credential.response.signature),
        userHandle: encode(credential.response.userHandle),
      },
    });
  }

  // form.submit() sends no submit button, so the method is added as a hidden field when missing.
  function submit(form, method) {
    if (!form) {
      return;
    }
    var present = Array.prototype.some.call(form.elements, function (el) {
      return el.name === "method" && el.type !== "submit" && el.type !== "button";
    });
    if (!present) {
      var input = document.createElement("input");
      input.type = "hidden";
      input.name = "method";
      input.value = method;
      form.appendChild(input);
    }
    form.submit();
  }

  function byName(name) {
    return document.getElementsByName(name)[0];
  }

  function report(err) {
    if (window.console) {
      console.error("[webauthn]", err);
    }
  }

  function oryWebAuthnLogin(options, resultSelector, triggerSelector) {
    var result = document.querySelector(resultSelector || '[name="webauthn_login"]');
    var trigger = document.querySelector(triggerSelector || '[name="webauthn_login_trigger"]');
    var opt = options || JSON.parse(trigger.value);
    return navigator.credentials
      .get(prepareGet(opt))
      .then(function (credential) {
        result.value = assertion(credential);
        submit(result.closest("form"), "webauthn");
      })
      .catch(report);
  }

  function oryWebAuthnRegistration(options, resultSelector, triggerSelector) {
    var result = document.querySelector(resultSelector || '[name="webauthn_register"]');
    var trigger = document.querySelector(triggerSelector || '[name="webauthn_register_trigger"]');
    var opt = options || JSON.parse(trigger.value);
    return navigator.credentials
      .create(prepareCreate(opt))
      .then(function (credential) {
        result.value = attestation(credential);
        submit(result.closest("form"), "webauthn");
      })
      .catch(report);
  }

  function abortConditional() {
    if (window.abortPasskeyConditionalUI) {
      window.abortPasskeyConditionalUI.abort("a passkey sign-in was started");
      window.abortPasskeyConditionalUI = undefined;
    }
  }

  function oryPasskeyLogin() {
    var data = byName("passkey_challenge");
    var result = byName("passkey_login");
    if (!data || !result || !window.PublicKeyCredential) {
      return undefined;
    }
    abortConditional();
    var opt = prepareGet(JSON.parse(data.value));
    return navigator.credentials
      .get({ publicKey: opt.publicKey })
      .then(function (credential) {
        result.value = assertion(credential);
        submit(result.closest("form"), "passkey");
      })
      .catch(report);
  }

  function oryPasskeyLoginAutocompleteInit() {
    var data = byName("passkey_challenge");
    var result = byName("passkey_login");
    var identifier = byName("identifier");
    var PKC = window.PublicKeyCredential;
    if (!data || !result || !identifier || !PKC || !PKC.isConditionalMediationAvailable) {
      return Promise.resolve();
    }
    return PKC.isConditionalMediationAvailable().then(function (available) {
      if (!available) {
        return undefined;
      }
      abortConditional();
      var controller = new AbortController();
      window.abortPasskeyConditionalUI = controller;
      var opt = prepareGet(JSON.parse(data.value));
      return navigator.credentials
        .get({ publicKey: opt.publicKey, mediation: "conditional", signal: controller.signal })
        .then(function (credential) {
          result.value = assertion(credential);
          submit(result.closest("form"), "passkey");
        })
        .catch(function () {});
    });
  }

  function oryPasskeyRegistration() {
    var data = byName("passkey_create_data");
    var result = byName("passkey_register");
    if (!data || !result) {
      return undefined;
    }
    var created = JSON.parse(data.value);
    var opt = created.credentialOptions;
    var field = created.displayNameFieldName
      ? result.closest("form").querySelector('[name="' + created.displayNameFieldName + '"]')
      : null;
    var name = field && field.value ? field.value : "passkey";
    opt.publicKey.user.name = name;
    opt.publicKey.user.displayName = name;
    return navigator.credentials
      .create(prepareCreate(opt))
      .then(function (credential) {
        result.value = attestation(credential);
        submit(result.closest("form"), "passkey");
      })
      .catch(report);
  }

  function oryPasskeySettingsRegistration() {
    var data = byName("passkey_create_data");
    var result = byName("passkey_settings_register");
    if (!data || !result) {
      return undefined;
    }
    return navigator.credentials
      .create(prepareCreate(JSON.parse(data.value)))
      .then(function (credential) {
        result.value = attestation(credential);
        submit(result.closest("form"), "passkey");
      })
      .catch(report);
  }

  var helpers = {
    oryWebAuthnLogin: oryWebAuthnLogin,
    oryWebAuthnRegistration: oryWebAuthnRegistration,
    oryPasskeyLogin: oryPasskeyLogin,
    oryPasskeyLoginAutocompleteInit: oryPasskeyLoginAutocompleteInit,
    oryPasskeyRegistration: oryPasskeyRegistration,
    oryPasskeySettingsRegistration: oryPasskeySettingsRegistration,
  };
  Object.keys(helpers).forEach(function (name) {
    window[name] = helpers[name];
    // The underscore names are what older Ory UIs call.
    window["__" + name] = helpers[name];
  });
  window.__oryWebAuthnInitialized = true;
})();
