/* Lazy loading of libcodext_cuda.so (see cuda_loader.h). Plain C, no CUDA headers:
 * this file is part of _C, which must build and import without a CUDA toolkit. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "cuda_loader.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static pthread_mutex_t load_lock = PTHREAD_MUTEX_INITIALIZER;
static int load_tried;
static cx_status load_status;
static char load_error[1536];
static char library_path[1024];
static const cx_cuda_api *loaded_api;

/* Directory of the shared object that holds this function (codext/_C*.so). */
static int module_directory(char *dir, size_t size) {
    Dl_info info;
    if (!dladdr((void *)&module_directory, &info) || !info.dli_fname)
        return 0;
    const char *slash = strrchr(info.dli_fname, '/');
    if (!slash) /* loaded by a bare name: the current directory */
        return snprintf(dir, size, ".") < (int)size;
    size_t n = (size_t)(slash - info.dli_fname);
    if (n + 1 > size)
        return 0;
    memcpy(dir, info.dli_fname, n);
    dir[n] = '\0';
    return 1;
}

/* The soname a failed dlopen could not find ("libcudnn.so.9: cannot open shared object
 * file: ..."), into name; 0 when the error is another one. */
static int missing_soname(const char *why, char *name, size_t size) {
    const char *end = strstr(why, ": cannot open shared object file");
    if (!end)
        return 0;
    const char *start = end;
    while (start > why && start[-1] != ' ' && start[-1] != ':' && start[-1] != '/')
        start--;
    size_t n = (size_t)(end - start);
    if (n == 0 || n + 1 > size)
        return 0;
    memcpy(name, start, n);
    name[n] = '\0';
    return 1;
}

/* Preloads `soname` (RTLD_GLOBAL: the dynamic linker then satisfies a later DT_NEEDED on
 * that soname with it) from the first folder of CODEXT_NVIDIA_LIB_DIRS (colon-separated;
 * codext/__init__.py lists the lib folders of pip's nvidia-* wheels on sys.path) that
 * holds it. 1 when one was loaded. */
static int preload_from_wheels(const char *soname, char *searched, size_t searched_size) {
    const char *dirs = getenv("CODEXT_NVIDIA_LIB_DIRS");
    snprintf(searched, searched_size, "%s", dirs && dirs[0] ? dirs : "(none)");
    if (!dirs || !dirs[0])
        return 0;
    const char *at = dirs;
    while (*at) {
        const char *colon = strchr(at, ':');
        size_t n = colon ? (size_t)(colon - at) : strlen(at);
        char path[1024];
        if (n > 0 && n + strlen(soname) + 2 < sizeof path) {
            memcpy(path, at, n);
            snprintf(path + n, sizeof path - n, "/%s", soname);
            FILE *f = fopen(path, "rb");
            if (f) {
                fclose(f);
                if (dlopen(path, RTLD_NOW | RTLD_GLOBAL))
                    return 1;
                dlerror();
            }
        }
        if (!colon)
            break;
        at = colon + 1;
    }
    return 0;
}

static cx_status load_locked(void) {
    const char *override = getenv("CODEXT_CUDA_LIBRARY");
    if (override && override[0]) {
        snprintf(library_path, sizeof library_path, "%s", override);
    } else {
        char dir[sizeof library_path - sizeof CX_CUDA_LIBRARY_NAME - 1];
        if (!module_directory(dir, sizeof dir))
            return cx_fail(CX_ERUNTIME, "cannot find the directory of codext._C (dladdr failed)");
        snprintf(library_path, sizeof library_path, "%s/%s", dir, CX_CUDA_LIBRARY_NAME);
    }
    FILE *probe = fopen(library_path, "rb");
    if (!probe) {
        if (override && override[0])
            return cx_fail(CX_ERUNTIME, "CODEXT_CUDA_LIBRARY=%s does not exist", library_path);
        return cx_fail(CX_ERUNTIME,
                       "codext was built without CUDA (no %s): this is the CPU-only build; "
                       "reinstall with CODEXT_CUDA=1 on a machine with the CUDA toolkit, "
                       "cuDNN 9 and NCCL",
                       library_path);
    }
    fclose(probe);
    /* A library the build linked by soname and the system cannot find (the rpath the
     * install recorded is gone, say): taken from pip's nvidia-* wheels when they have it,
     * one missing soname after another. */
    void *handle = NULL;
    char why_text[512] = "", searched[512] = "";
    for (int attempt = 0; attempt < 16 && !handle; attempt++) {
        dlerror();
        handle = dlopen(library_path, RTLD_NOW | RTLD_LOCAL);
        if (handle)
            break;
        const char *why = dlerror();
        snprintf(why_text, sizeof why_text, "%s", why ? why : "unknown dlopen error");
        char soname[256];
        if (!missing_soname(why_text, soname, sizeof soname) ||
            !preload_from_wheels(soname, searched, sizeof searched))
            break;
    }
    if (!handle) {
        int missing = strstr(why_text, "cannot open shared object file") != NULL;
        return cx_fail(CX_ERUNTIME, "cannot load %s: %s%s%s%s", library_path, why_text,
                       missing ? " (the CUDA runtime, cuBLAS, cuDNN 9 and NCCL 2 libraries it "
                                 "was linked against must be found through its rpath, "
                                 "LD_LIBRARY_PATH or pip's nvidia-* wheels; wheel folders "
                                 "searched: "
                               : "",
                       missing ? searched : "", missing ? ")" : "");
    }
    /* Never dlclose: unloading CUDA libraries from a live process is not supported. */
    cx_cuda_get_api_fn get_api = NULL;
    void *sym = dlsym(handle, CX_CUDA_ENTRY_POINT);
    memcpy(&get_api, &sym, sizeof get_api);
    if (!get_api)
        return cx_fail(CX_ERUNTIME, "%s has no %s: it is not a codext CUDA library", library_path,
                       CX_CUDA_ENTRY_POINT);
    const cx_cuda_api *api = get_api(CX_CUDA_ABI_VERSION);
    if (!api)
        return cx_fail(CX_ERUNTIME,
                       "%s is from another codext build (it does not speak ABI version %d); "
                       "rebuild codext so that _C and the CUDA library match",
                       library_path, CX_CUDA_ABI_VERSION);
    if (api->abi_version != CX_CUDA_ABI_VERSION || api->backend_size != sizeof(cx_backend))
        return cx_fail(CX_ERUNTIME,
                       "%s is from another codext build (ABI %d, backend table of %zu bytes; "
                       "expected ABI %d, %zu bytes); rebuild codext",
                       library_path, api->abi_version, api->backend_size, CX_CUDA_ABI_VERSION,
                       sizeof(cx_backend));
    loaded_api = api;
    return CX_OK;
}

cx_status cx_cuda_load(const cx_cuda_api **api) {
    pthread_mutex_lock(&load_lock);
    if (!load_tried) {
        load_tried = 1;
        load_status = load_locked();
        if (load_status != CX_OK)
            snprintf(load_error, sizeof load_error, "%s", cx_last_error());
    }
    cx_status status = load_status;
    const cx_cuda_api *result = loaded_api;
    pthread_mutex_unlock(&load_lock);
    if (status != CX_OK)
        return cx_fail(status, "%s", load_error);
    *api = result;
    return CX_OK;
}

int cx_cuda_available(char *reason, size_t size) {
    const cx_cuda_api *api = NULL;
    if (cx_cuda_load(&api) != CX_OK) {
        snprintf(reason, size, "%s", cx_last_error());
        return 0;
    }
    int count = 0;
    if (api->device_count(cx_fail, &count) != CX_OK) {
        snprintf(reason, size, "no usable CUDA device: %s", cx_last_error());
        return 0;
    }
    if (count < 1) {
        snprintf(reason, size, "no CUDA device is visible (CUDA_VISIBLE_DEVICES=%s)",
                 getenv("CUDA_VISIBLE_DEVICES") ? getenv("CUDA_VISIBLE_DEVICES") : "unset");
        return 0;
    }
    char info[512] = "";
    if (api->runtime_info(cx_fail, 0, info, sizeof info) != CX_OK)
        snprintf(info, sizeof info, "(runtime info failed: %s)", cx_last_error());
    snprintf(reason, size, "%d CUDA device(s); %s; %s; library %s", count, info, api->build,
             library_path);
    return 1;
}

cx_status cx_cuda_backend_create(int device, int deterministic, int allow_tf32,
                                 cx_backend **out) {
    const cx_cuda_api *api = NULL;
    CX_TRY(cx_cuda_load(&api));
    cx_cuda_config config = {device, deterministic, allow_tf32, cx_fail};
    return api->backend_create(&config, out);
}

void cx_cuda_backend_destroy(cx_backend *be) {
    const cx_cuda_api *api = NULL;
    if (be && cx_cuda_load(&api) == CX_OK)
        api->backend_destroy(be);
}

cx_status cx_cuda_backend_set_precision(cx_backend *be, int precision) {
    const cx_cuda_api *api = NULL;
    CX_TRY(cx_cuda_load(&api));
    return api->backend_set_precision(be, precision);
}

cx_status cx_cuda_backend_memory(cx_backend *be, size_t *free_bytes, size_t *total_bytes) {
    const cx_cuda_api *api = NULL;
    CX_TRY(cx_cuda_load(&api));
    return api->memory_info(be, free_bytes, total_bytes);
}

int cx_precision_from_name(const char *name) {
    static const char *const names[] = {"fp32", "fp16", "bf16"};
    for (int i = 0; i < 3; i++)
        if (name && strcmp(name, names[i]) == 0)
            return i;
    return -1;
}

static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;
static cx_backend *shared_backend;

cx_status cx_cuda_shared_backend(cx_backend **out) {
    pthread_mutex_lock(&shared_lock);
    cx_status status = CX_OK;
    if (!shared_backend) {
        const char *env = getenv("CODEXT_CUDA_DEVICE");
        int device = env && env[0] ? atoi(env) : 0;
        status = cx_cuda_backend_create(device, 1, 0, &shared_backend);
    }
    *out = shared_backend;
    pthread_mutex_unlock(&shared_lock);
    return status;
}
