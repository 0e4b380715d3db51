"""The packaged run configs (installed as `fractalpre.configs`; `python -m fractalpre.train --config NAME`
loads one by name from any folder). Each module's docstring holds its run command."""
