/* safetensors writer (see safetensors.h): float32 tensors and string metadata, written
 * atomically (temporary file, fsync, rename, fsync of the directory). The reader is in
 * safetensors.c. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include "safetensors.h"

#include "crc32c.h"
#include "json.h"
#include "safetensors_limits.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


typedef struct {
    char *chars;
    size_t length, capacity;
    int out_of_memory;
} text_buffer;

static void put_bytes(text_buffer *b, const char *s, size_t n) {
    if (b->out_of_memory)
        return;
    if (b->capacity - b->length < n + 1) {
        size_t capacity = b->capacity ? b->capacity : 1024;
        while (capacity - b->length < n + 1) {
            if (capacity > SIZE_MAX / 2) {
                b->out_of_memory = 1;
                return;
            }
            capacity *= 2;
        }
        char *grown = realloc(b->chars, capacity);
        if (!grown) {
            b->out_of_memory = 1;
            return;
        }
        b->chars = grown;
        b->capacity = capacity;
    }
    memcpy(b->chars + b->length, s, n);
    b->length += n;
    b->chars[b->length] = '\0';
}

static void put_text(text_buffer *b, const char *s) { put_bytes(b, s, strlen(s)); }

static void put_u64(text_buffer *b, uint64_t v) {
    char digits[24];
    snprintf(digits, sizeof digits, "%llu", (unsigned long long)v);
    put_text(b, digits);
}

/* A JSON string literal; s must be valid UTF-8 (checked by the caller). */
static void put_json_string(text_buffer *b, const char *s) {
    put_bytes(b, "\"", 1);
    for (const unsigned char *c = (const unsigned char *)s; *c; c++) {
        char esc[8];
        if (*c == '"' || *c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*c;
            put_bytes(b, esc, 2);
        } else if (*c < 0x20) {
            snprintf(esc, sizeof esc, "\\u%04x", *c);
            put_bytes(b, esc, 6);
        } else {
            put_bytes(b, (const char *)c, 1);
        }
    }
    put_bytes(b, "\"", 1);
}

static int valid_utf8(const char *s) {
    size_t n = strlen(s);
    return cx_utf8_check((const unsigned char *)s, n) == n;
}

static int cmp_strings(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Returns a repeated string of list[0, n), or NULL (also when memory runs out, in which
 * case the writer's own checks are merely skipped). */
static const char *find_repeat(const char *const *list, int n) {
    if (n < 2)
        return NULL;
    const char **sorted = malloc((size_t)n * sizeof *sorted);
    if (!sorted)
        return NULL;
    memcpy(sorted, list, (size_t)n * sizeof *sorted);
    qsort(sorted, (size_t)n, sizeof *sorted, cmp_strings);
    const char *repeat = NULL;
    for (int k = 1; k < n && !repeat; k++)
        if (!strcmp(sorted[k - 1], sorted[k]))
            repeat = sorted[k];
    free(sorted);
    return repeat;
}

/* CRC-32C of `count` floats as the file stores them (little-endian). */
static uint32_t crc_floats_le(const float *values, uint64_t count) {
    if (ST_LITTLE_ENDIAN)
        return cx_crc32c(0, values, (size_t)count * 4);
    uint32_t crc = 0;
    unsigned char chunk[4096];
    while (count) {
        size_t n = count < sizeof chunk / 4 ? (size_t)count : sizeof chunk / 4;
        for (size_t k = 0; k < n; k++) {
            uint32_t bits;
            memcpy(&bits, &values[k], 4);
            for (int b = 0; b < 4; b++)
                chunk[4 * k + b] = (unsigned char)(bits >> (8 * b));
        }
        crc = cx_crc32c(crc, chunk, n * 4);
        values += n;
        count -= n;
    }
    return crc;
}

/* Checks the arguments and builds the padded header JSON into *header. */
static cx_status build_header(const char *path, int n_tensors, const char *const *names, const int *ndims,
                              const int64_t *const *shapes, const float *const *data, int n_metadata,
                              const char *const *metadata_keys, const char *const *metadata_values,
                              text_buffer *header) {
    if (n_tensors < 0 || n_metadata < 0 || (n_tensors && (!names || !ndims || !shapes || !data)) ||
        (n_metadata && (!metadata_keys || !metadata_values)))
        return cx_fail(CX_EINVAL, "%s: cx_st_write_f32: bad arguments", path);
    for (int k = 0; k < n_metadata; k++) {
        if (!metadata_keys[k] || !metadata_values[k] || !valid_utf8(metadata_keys[k]) ||
            !valid_utf8(metadata_values[k]))
            return cx_fail(CX_EINVAL, "%s: metadata entry %d is NULL or not valid UTF-8", path, k);
    }
    for (int k = 0; k < n_metadata; k++)
        if (!strcmp(metadata_keys[k], ST_CHECKSUM_KEY))
            return cx_fail(CX_EINVAL, "%s: metadata key \"%s\" is reserved for the tensor checksums the writer "
                           "adds", path, ST_CHECKSUM_KEY);
    const char *repeat = find_repeat(metadata_keys, n_metadata);
    if (repeat)
        return cx_fail(CX_EINVAL, "%s: metadata key \"%.200s\" given twice", path, repeat);
    uint64_t offset = 0;
    for (int i = 0; i < n_tensors; i++) {
        const char *name = names[i];
        if (!name || !valid_utf8(name))
            return cx_fail(CX_EINVAL, "%s: tensor %d's name is NULL or not valid UTF-8", path, i);
        if (!strcmp(name, "__metadata__"))
            return cx_fail(CX_EINVAL, "%s: \"__metadata__\" is reserved and cannot name a tensor", path);
        if (ndims[i] < 0 || ndims[i] > CX_ST_MAX_DIMS || (ndims[i] && !shapes[i]))
            return cx_fail(CX_EINVAL, "%s: tensor '%.200s' has %d dims (0 to %d allowed)", path, name, ndims[i],
                           CX_ST_MAX_DIMS);
        uint64_t numel = 1, nonzero_product = 1;
        for (int d = 0; d < ndims[i]; d++) {
            int64_t dim = shapes[i][d];
            if (dim < 0)
                return cx_fail(CX_EINVAL, "%s: tensor '%.200s' has negative dim %lld", path, name, (long long)dim);
            if (dim && nonzero_product > ST_MAX_NUMEL / (uint64_t)dim)
                return cx_fail(CX_EINVAL, "%s: tensor '%.200s' has too many elements", path, name);
            if (dim)
                nonzero_product *= (uint64_t)dim;
            numel *= (uint64_t)dim;
        }
        if (numel && !data[i])
            return cx_fail(CX_EINVAL, "%s: tensor '%.200s' has no data", path, name);
        uint64_t bytes = numel * 4;
        if (offset > UINT64_MAX - bytes)
            return cx_fail(CX_EINVAL, "%s: tensors too large in total", path);
        put_text(header, header->length ? "," : "{");
        put_json_string(header, name);
        put_text(header, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < ndims[i]; d++) {
            if (d)
                put_text(header, ",");
            put_u64(header, (uint64_t)shapes[i][d]);
        }
        put_text(header, "],\"data_offsets\":[");
        put_u64(header, offset);
        put_text(header, ",");
        put_u64(header, offset + bytes);
        put_text(header, "]}");
        offset += bytes;
    }
    repeat = find_repeat(names, n_tensors);
    if (repeat)
        return cx_fail(CX_EINVAL, "%s: tensor name '%.200s' given twice", path, repeat);
    text_buffer checksums = {0}; /* {"name":"crc",...}, stored as one metadata string */
    put_text(&checksums, "{");
    for (int i = 0; i < n_tensors; i++) {
        uint64_t numel = 1;
        for (int d = 0; d < ndims[i]; d++)
            numel *= (uint64_t)shapes[i][d];
        char crc[16];
        snprintf(crc, sizeof crc, ":\"%08x\"", (unsigned)(numel ? crc_floats_le(data[i], numel) : 0));
        if (i)
            put_text(&checksums, ",");
        put_json_string(&checksums, names[i]);
        put_text(&checksums, crc);
    }
    put_text(&checksums, "}");
    if (checksums.out_of_memory) {
        free(checksums.chars);
        return cx_fail(CX_ENOMEM, "%s: out of memory while building the header", path);
    }
    /* "__metadata__" goes first: build it separately and splice it in front. */
    text_buffer meta = {0};
    put_text(&meta, "{\"__metadata__\":{");
    for (int k = 0; k < n_metadata; k++) {
        put_json_string(&meta, metadata_keys[k]);
        put_text(&meta, ":");
        put_json_string(&meta, metadata_values[k]);
        put_text(&meta, ",");
    }
    put_json_string(&meta, ST_CHECKSUM_KEY);
    put_text(&meta, ":");
    put_json_string(&meta, checksums.chars);
    free(checksums.chars);
    put_text(&meta, "}");
    if (header->length)
        header->chars[0] = ','; /* the tensors' opening '{' becomes a separator */
    put_bytes(&meta, header->chars ? header->chars : "", header->length);
    meta.out_of_memory |= header->out_of_memory;
    free(header->chars);
    *header = meta;
    put_text(header, "}");
    while (header->length % 8)
        put_text(header, " ");
    if (header->out_of_memory)
        return cx_fail(CX_ENOMEM, "%s: out of memory while building the header", path);
    if (header->length > ST_MAX_HEADER_BYTES)
        return cx_fail(CX_EINVAL, "%s: header of %zu bytes exceeds the %llu bytes readers accept", path,
                       header->length, (unsigned long long)ST_MAX_HEADER_BYTES);
    return CX_OK;
}

/* Writes n bytes; returns 0 or -1 with errno set. */
static int write_all(int fd, const void *buf, size_t n) {
    const char *p = buf;
    while (n) {
        size_t chunk = n < ((size_t)1 << 30) ? n : ((size_t)1 << 30);
        ssize_t put = write(fd, p, chunk);
        if (put < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += put;
        n -= (size_t)put;
    }
    return 0;
}

static int write_floats_le(int fd, const float *values, uint64_t count) {
    if (ST_LITTLE_ENDIAN)
        return write_all(fd, values, (size_t)count * 4);
    unsigned char chunk[4096];
    while (count) {
        size_t n = count < sizeof chunk / 4 ? (size_t)count : sizeof chunk / 4;
        for (size_t k = 0; k < n; k++) {
            uint32_t bits;
            memcpy(&bits, &values[k], 4);
            for (int b = 0; b < 4; b++)
                chunk[4 * k + b] = (unsigned char)(bits >> (8 * b));
        }
        if (write_all(fd, chunk, n * 4) != 0)
            return -1;
        values += n;
        count -= n;
    }
    return 0;
}

/* fsync of the directory holding path, so the rename itself is durable. Filesystems
 * that cannot sync directories (EINVAL, ENOTSUP) or directories we cannot open for
 * reading are let pass: the data is already in place. */
static int sync_parent_dir(const char *path, char *dir, size_t dir_size) {
    const char *slash = strrchr(path, '/');
    if (!slash)
        snprintf(dir, dir_size, ".");
    else if (slash == path)
        snprintf(dir, dir_size, "/");
    else
        snprintf(dir, dir_size, "%.*s", (int)(slash - path), path);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    int r = fsync(fd);
    int err = errno;
    close(fd);
    if (r != 0 && err != EINVAL && err != ENOTSUP) {
        errno = err;
        return -1;
    }
    return 0;
}

cx_status cx_st_write_f32(const char *path, int n_tensors, const char *const *names,
                          const int *ndims, const int64_t *const *shapes,
                          const float *const *data, int n_metadata,
                          const char *const *metadata_keys,
                          const char *const *metadata_values) {
    if (!path || !*path)
        return cx_fail(CX_EINVAL, "cx_st_write_f32: empty path");
    text_buffer header = {0};
    cx_status status = build_header(path, n_tensors, names, ndims, shapes, data, n_metadata, metadata_keys,
                                    metadata_values, &header);
    if (status != CX_OK) {
        free(header.chars);
        return status;
    }
    size_t tmp_size = strlen(path) + 32;
    char *tmp = malloc(tmp_size), *dir = malloc(tmp_size);
    if (!tmp || !dir) {
        free(tmp);
        free(dir);
        free(header.chars);
        return cx_fail(CX_ENOMEM, "%s: out of memory", path);
    }
    snprintf(tmp, tmp_size, "%s.tmp.%ld", path, (long)getpid());
    const char *step = "create the temporary file";
    int created = 0, fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0666);
    int err = 0;
    if (fd < 0)
        goto fail;
    created = 1;
    unsigned char length_le[8];
    for (int b = 0; b < 8; b++)
        length_le[b] = (unsigned char)((uint64_t)header.length >> (8 * b));
    step = "write";
    if (write_all(fd, length_le, 8) != 0 || write_all(fd, header.chars, header.length) != 0)
        goto fail;
    for (int i = 0; i < n_tensors; i++) {
        uint64_t numel = 1;
        for (int d = 0; d < ndims[i]; d++)
            numel *= (uint64_t)shapes[i][d];
        if (numel && write_floats_le(fd, data[i], numel) != 0)
            goto fail;
    }
    step = "fsync";
    if (fsync(fd) != 0)
        goto fail;
    step = "close";
    int r = close(fd);
    fd = -1;
    if (r != 0)
        goto fail;
    step = "rename the temporary file over the target";
    if (rename(tmp, path) != 0)
        goto fail;
    created = 0;
    step = "fsync the directory";
    if (sync_parent_dir(path, dir, tmp_size) != 0) {
        err = errno;
        status = cx_fail(CX_EIO, "%s: written, but could not fsync directory %s: %s", path, dir, strerror(err));
    }
    free(tmp);
    free(dir);
    free(header.chars);
    return status;
fail:
    err = errno;
    if (fd >= 0)
        close(fd);
    if (created)
        unlink(tmp);
    status = cx_fail(CX_EIO, "%s: cannot write safetensors file: %s (%s) failed: %s", path, step, tmp,
                     strerror(err));
    free(tmp);
    free(dir);
    free(header.chars);
    return status;
}
