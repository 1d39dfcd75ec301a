"""The engine: reads sources, runs the selected rules over them, turns fixes into edits.

It knows no rule by name (rules are found in ``amplint.rules`` by the registry) and nothing
of output formats or the command line. ``contract`` holds the types rules use.
"""
