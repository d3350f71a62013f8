"""The standalone build's entry point, for PyInstaller's analysis: the modules
it reaches (with every gracerun submodule, gracerun.spec's 1.) are the bundle.

At run time the launcher (launcher.c) runs these same two lines itself; this
file is not in the bundle.  Unlike PyInstaller's bootloader, the launcher
leaves the environment as the caller gave it, so nothing is undone here.
"""

from gracerun.cli import main

main()
