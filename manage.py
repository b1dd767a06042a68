#!/usr/bin/env python
"""Django's command-line utility; starts the embedded services when no URLs are set."""

from __future__ import annotations

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "agentplatform.project.settings")
    from agentplatform.devtools import embedded

    embedded.configure()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
