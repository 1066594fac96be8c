"""The PEP 3333 entry point: ``gunicorn -c gunicorn.conf.py wsgi:application``.

Any WSGI server can import ``application``; configuration comes from the environment.
"""

from service.app import create_app

application = create_app()
