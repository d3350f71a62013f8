"""gracerun's stand-in for PyInstaller's loader module of the same name
(swapped in by gracerun.spec; PyInstaller's bootstrap calls install() at every start).

PyInstaller's version imports ctypes at start-up so that CDLL("libfoo.so") also
looks in the bundle.  gracerun loads no library by name through ctypes: its one
use is CDLL(None), the process itself, for prctl() when it is not PID 1.  As
PID 1, the case that matters in a container, gracerun never imports ctypes, and
this stand-in keeps it that way (about 2 ms of start-up and 0.3 MB of memory).
"""


def install() -> None:
    """Nothing to install: see the module docstring."""
