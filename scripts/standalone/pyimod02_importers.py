"""gracerun's stand-in for PyInstaller's importer module of the same name
(swapped in by gracerun.spec; PyInstaller's bootstrap calls install() at every start).

PyInstaller's version installs a finder and loader for its PYZ archive: a
zlib-compressed file of modules whose table of contents, together with the
reader module and zlib with libz, stays in memory for the life of the process
(about 0.2 MB of gracerun's idle RSS, see docs/standalone.md).  gracerun.spec
builds with `noarchive`: every module is a plain .pyc file under sys._MEIPASS,
which Python's own path finder imports exactly as it imports the pip install's
modules, so nothing of PyInstaller's importer is needed and this stand-in
installs none of it (gracerun.spec also leaves out PyInstaller's archive reader,
pyimod01_archive, which only this module used).

What it keeps of PyInstaller's install(): the __file__ of the stdlib modules
that Python 3.11+ runs frozen (os, codecs, io, ...), which PyInstaller's
interpreter configuration leaves without one.
"""

import sys


def install() -> None:
    """Drop the bootloader's pointer to the (empty) PYZ and give frozen stdlib modules a __file__."""
    import _imp

    sys.__dict__.pop("_pyinstaller_pyz", None)  # set by the bootloader for the PYZ reader
    if not sys._stdlib_dir:  # type: ignore[attr-defined]
        sys._stdlib_dir = sys._MEIPASS  # type: ignore[attr-defined]
    for name, module in list(sys.modules.items()):
        if not _imp.is_frozen(name):
            continue
        state = module.__spec__.loader_state
        origin = state.origname + (".__init__" if _imp.is_frozen_package(name) else "")
        filename = sys._MEIPASS + "/" + origin.replace(".", "/") + ".pyc"  # type: ignore[attr-defined]
        if not hasattr(module, "__file__"):
            try:
                module.__file__ = filename
            except AttributeError:
                pass
        if state.filename is None and origin != "importlib._bootstrap":
            state.filename = filename
