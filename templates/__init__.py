"""The built-in jinja2 templates (package data). Copy one into `paths.templates` to restyle it."""
