/*
 * The standalone gracerun's executable: the bundle's own Python, started on
 * gracerun.cli.main().  scripts/build-standalone compiles it against the
 * interpreter it bundles and links it to _internal/libpython with
 * RPATH $ORIGIN/_internal; PyInstaller only collects the files.
 *
 * Why not PyInstaller's bootloader: it stays in the process for gracerun's
 * whole life, and its own code, the libc functions only it calls (sscanf,
 * stdio, the fortified *_chk ones) and the libpython embedding calls it makes
 * are pages a pip install's python3 never touches: ~0.3 MB of idle RSS, the
 * difference that kept the standalone above the pip install.  It also points
 * LD_LIBRARY_PATH at the bundle (which gracerun then had to undo for the
 * service); this launcher changes nothing in the environment: the bundle's
 * extension modules find their libraries through their own RPATH
 * ($ORIGIN/../.., set at build time), searched before any LD_LIBRARY_PATH.
 *
 * The interpreter is configured as an isolated one (PYTHON* variables, the
 * user's site-packages and the current directory play no part: the image's
 * environment is the service's, not gracerun's), without `site`, with the
 * bundle as its only module path, and otherwise as python3 starts: Python's
 * usual signal handlers (SIGPIPE and SIGXFSZ ignored, SIGINT), which gracerun's
 * code expects (docs/pid1.md), the user's locale, UTF-8 mode in the C locale.
 */
#include <Python.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifndef PYTHON_DIR
#error "PYTHON_DIR (python3.11: where lib-dynload sits under _internal) must be defined"
#endif

static int append(PyWideStringList *list, const char *path) {
    wchar_t *wide = Py_DecodeLocale(path, NULL);
    if (wide == NULL)
        return -1;
    PyStatus status = PyWideStringList_Append(list, wide);
    PyMem_RawFree(wide);
    return PyStatus_Exception(status) ? -1 : 0;
}

int main(int argc, char **argv) {
    char dir[PATH_MAX], internal[PATH_MAX], dynload[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", dir, sizeof dir - 1);
    if (n <= 0) {
        fputs("gracerun: error: cannot find its own executable (/proc/self/exe): "
              "is /proc mounted?\n", stderr);
        return 126;
    }
    dir[n] = '\0';
    *strrchr(dir, '/') = '\0';
    if (snprintf(internal, sizeof internal, "%s/_internal", dir) >= (int)sizeof internal
        || snprintf(dynload, sizeof dynload, "%s/_internal/" PYTHON_DIR "/lib-dynload", dir)
               >= (int)sizeof dynload) {
        fputs("gracerun: error: the path of its directory is too long\n", stderr);
        return 126;
    }

    /* As python3 does: the user's locale, and UTF-8 mode when that locale is C
     * or POSIX (PEP 540), so a chart or a non-ASCII name prints in a bare
     * container; but no C-locale coercion, which would put LC_CTYPE into the
     * environment the service inherits. */
    PyPreConfig preconfig;
    PyPreConfig_InitPythonConfig(&preconfig);
    preconfig.isolated = 1;
    preconfig.use_environment = 0;
    preconfig.coerce_c_locale = 0;
    preconfig.coerce_c_locale_warn = 0;
    preconfig.utf8_mode = -1;
    PyStatus status = Py_PreInitialize(&preconfig);
    if (PyStatus_Exception(status))
        Py_ExitStatusException(status);

    PyConfig config;
    PyConfig_InitIsolatedConfig(&config);
    config.site_import = 0;
    config.write_bytecode = 0;
    config.install_signal_handlers = 1;
    config.parse_argv = 0;
    config.module_search_paths_set = 1;
    status = PyConfig_SetBytesString(&config, &config.home, internal);
    if (!PyStatus_Exception(status))
        status = PyConfig_SetBytesArgv(&config, argc, argv);
    if (!PyStatus_Exception(status))
        status = PyConfig_SetString(&config, &config.run_command,
                                    L"from gracerun.cli import main\nmain()\n");
    if (!PyStatus_Exception(status)
        && (append(&config.module_search_paths, internal) != 0
            || append(&config.module_search_paths, dynload) != 0))
        status = PyStatus_NoMemory();
    if (!PyStatus_Exception(status))
        status = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(status))
        Py_ExitStatusException(status);
    return Py_RunMain();
}
