"""The entry point of the standalone build (scripts/build-standalone): gracerun's
own `main()`, after undoing what PyInstaller's bootloader put in the environment.

Why: the bootloader prepends the bundle's library directory to
LD_LIBRARY_PATH (saving the caller's value in LD_LIBRARY_PATH_ORIG) and sets
_PYI_* variables for its own use.  gracerun's children inherit os.environ, so
without this a JRE service would resolve libz, libssl or libcrypto from
gracerun's bundle instead of its own image, and a service that is itself a
PyInstaller build would take the _PYI_* variables for its parent's.  gracerun's
own libraries are already mapped by the time this runs, so nothing here changes
what gracerun loads.
"""

import os


def restore_environment(environ: "os._Environ[str]") -> None:
    """Give `environ` back the caller's LD_LIBRARY_PATH and drop the bootloader's variables."""
    original = environ.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is None:
        environ.pop("LD_LIBRARY_PATH", None)  # the caller had none: the bootloader's only
    else:
        environ["LD_LIBRARY_PATH"] = original
    for name in [name for name in environ if name.startswith("_PYI_")]:
        del environ[name]


restore_environment(os.environ)

from gracerun.cli import main  # noqa: E402  (after the environment is restored)

main()
