"""The application: the command line, the main job end to end, its report, the demo.

cli (arguments in, one public call per command) · job (compress → fine-tune → export → bench
into an output folder) · report (tables and plots) · demo (the digits CNN) · loading (models
and weights named on the command line) · data (the bundled digits).

May import: everything below it. Entry point: `shrink.app.cli:main` (the `shrink` command).
"""
