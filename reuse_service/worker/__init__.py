"""The program that runs learnware code inside the sandbox, and its wire format.

`runner.py` and `frames.py` run inside the sandbox with only the standard library and numpy;
they never import lwdock. `shim/learnware` is the minimal `learnware` module reference
learnwares import (`learnware.model.base.BaseModel`).
"""
