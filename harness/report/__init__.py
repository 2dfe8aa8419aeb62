"""Run reports: JSON (machine), JUnit XML (CI), HTML (people; Jinja2 templates in ``templates/``)."""
