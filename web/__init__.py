"""Browser client: jinja2 templates, static ES modules and the zh-CN/en message catalogue."""
