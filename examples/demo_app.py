"""The quickstart's demo upstream; it lives in the package so ``sidecar demo`` can run it.

python examples/demo_app.py --port 8080
"""

from sidecar.demo_app import app, main

__all__ = ["app"]

if __name__ == "__main__":
    main()
