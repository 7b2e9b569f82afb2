"""deploykit: Ansible-driven zero-downtime deploys of Python web apps."""

__version__ = "0.1.0"
