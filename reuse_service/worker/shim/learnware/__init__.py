"""A minimal stand-in for the reference `learnware` package inside the sandbox.

Only what learnware packages import at run time: `learnware.model.base.BaseModel`. It is not
the reference package and holds none of its market, search or specification code.
"""

__version__ = "0.4.0.post1+lwdock-shim"
