/* safetensors reader (see safetensors.h): opening and validation; the float32 conversions
 * are in safetensors_read.c, the writer in safetensors_write.c.
 *
 * Reading loads the whole file, parses the header with our strict JSON parser and
 * validates every entry against the file before handing anything out, so later reads
 * (cx_st_read_f32) can trust the offsets. Any hostile input ends in CX_EIO with a
 * message naming the file; nothing is read outside the buffer. */
#if !defined(_GNU_SOURCE) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include "safetensors.h"

#include "crc32c.h"
#include "json.h"
#include "safetensors_limits.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


typedef struct {
    const char *name;
    int bits; /* per element */
} st_dtype;

/* Every dtype the format defines, so sizes of tensors we cannot convert still validate. */
static const st_dtype known_dtypes[] = {
    {"F64", 64}, {"F32", 32}, {"F16", 16}, {"BF16", 16}, {"I64", 64}, {"I32", 32},
    {"I16", 16}, {"I8", 8}, {"U64", 64}, {"U32", 32}, {"U16", 16}, {"U8", 8},
    {"BOOL", 8}, {"C64", 64}, {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8},
    {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"F4", 4},
};

static const st_dtype *find_dtype(const char *name) {
    for (size_t k = 0; k < sizeof known_dtypes / sizeof known_dtypes[0]; k++)
        if (!strcmp(known_dtypes[k].name, name))
            return &known_dtypes[k];
    return NULL;
}

static uint64_t load_le64(const unsigned char *b) {
    uint64_t v = 0;
    for (int k = 7; k >= 0; k--)
        v = (v << 8) | b[k];
    return v;
}

/* Reads exactly n bytes; returns 0, or -1 with errno set, or 1 at a premature end. */
static int read_exact(int fd, unsigned char *buf, size_t n) {
    while (n) {
        size_t chunk = n < ((size_t)1 << 30) ? n : ((size_t)1 << 30);
        ssize_t got = read(fd, buf, chunk);
        if (got < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (got == 0)
            return 1;
        buf += got;
        n -= (size_t)got;
    }
    return 0;
}

/* ---- header validation ---------------------------------------------------------------- */

typedef struct {
    const char *name; /* in the JSON document */
    const st_dtype *dtype;
    int ndim;
    int64_t shape[CX_ST_MAX_DIMS];
    uint64_t begin, end;
    int has_crc32c;
    uint32_t crc32c;
} st_entry;

static const char *why_not_count(const cx_json_value *v) {
    if (v->kind != CX_JSON_NUMBER)
        return cx_json_kind_name(v->kind);
    if (!v->is_integer)
        return "not an integer (or too large)";
    if (v->negative && v->u.magnitude)
        return "negative";
    return "too large";
}

/* Validates one tensor entry against the data block; fills *e. */
static cx_status check_entry(const char *path, const char *name, const cx_json_value *v,
                             uint64_t data_size, st_entry *e) {
    memset(e, 0, sizeof *e);
    e->name = name;
    if (v->kind != CX_JSON_OBJECT)
        return cx_fail(CX_EIO, "%s: tensor '%.200s': entry is %s, expected an object {dtype, shape, data_offsets}",
                       path, name, cx_json_kind_name(v->kind));
    const cx_json_value *dtype = cx_json_member(v, "dtype");
    const cx_json_value *shape = cx_json_member(v, "shape");
    const cx_json_value *offsets = cx_json_member(v, "data_offsets");
    const char *missing = !dtype ? "dtype" : !shape ? "shape" : !offsets ? "data_offsets" : NULL;
    if (missing)
        return cx_fail(CX_EIO, "%s: tensor '%.200s': missing key \"%s\"", path, name, missing);
    if (dtype->kind != CX_JSON_STRING)
        return cx_fail(CX_EIO, "%s: tensor '%.200s': \"dtype\" is %s, expected a string", path, name,
                       cx_json_kind_name(dtype->kind));
    e->dtype = find_dtype(dtype->u.string.chars);
    if (!e->dtype)
        return cx_fail(CX_EIO, "%s: tensor '%.200s': unknown dtype \"%.40s\"", path, name, dtype->u.string.chars);
    if (shape->kind != CX_JSON_ARRAY)
        return cx_fail(CX_EIO, "%s: tensor '%.200s': \"shape\" is %s, expected an array", path, name,
                       cx_json_kind_name(shape->kind));
    if (shape->u.items.count > CX_ST_MAX_DIMS)
        return cx_fail(CX_EIO, "%s: tensor '%.200s': shape has %zu dims, at most %d are supported", path, name,
                       shape->u.items.count, CX_ST_MAX_DIMS);
    uint64_t numel = 1, nonzero_product = 1;
    for (const cx_json_value *d = shape->u.items.first; d; d = d->next) {
        uint64_t dim;
        if (!cx_json_as_u64(d, &dim) || dim > (uint64_t)INT64_MAX)
            return cx_fail(CX_EIO, "%s: tensor '%.200s': shape entry %d is %s, expected a non-negative integer",
                           path, name, e->ndim, why_not_count(d));
        if (dim) {
            if (nonzero_product > ST_MAX_NUMEL / dim)
                return cx_fail(CX_EIO, "%s: tensor '%.200s': shape has too many elements", path, name);
            nonzero_product *= dim;
        }
        numel *= dim; /* <= nonzero_product, cannot overflow */
        e->shape[e->ndim++] = (int64_t)dim;
    }
    if (offsets->kind != CX_JSON_ARRAY || offsets->u.items.count != 2 ||
        !cx_json_as_u64(offsets->u.items.first, &e->begin) ||
        !cx_json_as_u64(offsets->u.items.first->next, &e->end))
        return cx_fail(CX_EIO, "%s: tensor '%.200s': \"data_offsets\" must be [begin, end] with non-negative integers",
                       path, name);
    if (e->begin > e->end)
        return cx_fail(CX_EIO, "%s: tensor '%.200s': data_offsets [%llu, %llu] have begin > end", path, name,
                       (unsigned long long)e->begin, (unsigned long long)e->end);
    if (e->end > data_size)
        return cx_fail(CX_EIO, "%s: tensor '%.200s': data_offsets end %llu is beyond the data block of %llu bytes "
                       "(file truncated?)", path, name, (unsigned long long)e->end, (unsigned long long)data_size);
    /* numel <= 2^60 (ST_MAX_NUMEL), so neither product below overflows uint64. */
    int bits = e->dtype->bits;
    uint64_t span = e->end - e->begin;
    uint64_t expected = bits % 8 == 0 ? numel * (uint64_t)(bits / 8) : numel * (uint64_t)bits / 8;
    if (bits % 8 != 0 && numel * (uint64_t)bits % 8 != 0)
        return cx_fail(CX_EIO, "%s: tensor '%.200s': %llu elements of %s do not fill a whole number of bytes",
                       path, name, (unsigned long long)numel, e->dtype->name);
    if (expected != span)
        return cx_fail(CX_EIO, "%s: tensor '%.200s': %s shape with %llu elements needs %llu bytes, but data_offsets "
                       "[%llu, %llu] span %llu bytes", path, name, e->dtype->name, (unsigned long long)numel,
                       (unsigned long long)expected, (unsigned long long)e->begin, (unsigned long long)e->end,
                       (unsigned long long)span);
    return CX_OK;
}

static int range_order(const void *a, const void *b) {
    const st_entry *x = *(const st_entry *const *)a, *y = *(const st_entry *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return (x > y) - (x < y); /* header order among identical ranges */
}

/* The tensors, sorted by (begin, end), must tile [0, data_size): each begins where the
 * previous one ended (empty tensors included), the last ends at data_size. */
static cx_status check_coverage(const char *path, st_entry *entries, size_t n, uint64_t data_size) {
    const st_entry **sorted = malloc((n ? n : 1) * sizeof *sorted);
    if (!sorted)
        return cx_fail(CX_ENOMEM, "%s: out of memory while checking tensor ranges", path);
    for (size_t k = 0; k < n; k++)
        sorted[k] = &entries[k];
    qsort((void *)sorted, n, sizeof *sorted, range_order);
    cx_status status = CX_OK;
    uint64_t covered = 0;
    for (size_t k = 0; k < n && status == CX_OK; k++) {
        const st_entry *cur = sorted[k], *prev = k ? sorted[k - 1] : NULL;
        if (cur->begin < covered)
            status = cx_fail(CX_EIO, "%s: tensors '%.200s' [%llu, %llu) and '%.200s' [%llu, %llu) overlap", path,
                             prev->name, (unsigned long long)prev->begin, (unsigned long long)prev->end,
                             cur->name, (unsigned long long)cur->begin, (unsigned long long)cur->end);
        else if (cur->begin > covered && !prev)
            status = cx_fail(CX_EIO, "%s: the first tensor, '%.200s', begins at byte %llu of the data block: "
                             "%llu unused bytes before it", path, cur->name, (unsigned long long)cur->begin,
                             (unsigned long long)cur->begin);
        else if (cur->begin > covered)
            status = cx_fail(CX_EIO, "%s: tensor '%.200s' begins at byte %llu of the data block, but the tensor "
                             "before it, '%.200s', ends at %llu: %llu unused bytes between them", path, cur->name,
                             (unsigned long long)cur->begin, prev->name, (unsigned long long)covered,
                             (unsigned long long)(cur->begin - covered));
        covered = cur->end;
    }
    if (status == CX_OK && covered != data_size)
        status = cx_fail(CX_EIO, "%s: %llu trailing bytes after the last tensor (the tensors cover %llu of the "
                         "data block's %llu bytes; header length wrong or data appended?)", path,
                         (unsigned long long)(data_size - covered), (unsigned long long)covered,
                         (unsigned long long)data_size);
    free((void *)sorted);
    return status;
}

/* ---- checksums (ST_CHECKSUM_KEY) ------------------------------------------------------- */

static int name_order(const void *a, const void *b) {
    return strcmp((*(const st_entry *const *)a)->name, (*(const st_entry *const *)b)->name);
}

static int parse_hex8(const char *s, size_t length, uint32_t *out) {
    if (length != 8)
        return 0;
    uint32_t v = 0;
    for (size_t k = 0; k < 8; k++) {
        char c = s[k];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            return 0;
        v = v << 4 | (uint32_t)d;
    }
    *out = v;
    return 1;
}

/* Checks the recorded checksums (text: the value of ST_CHECKSUM_KEY) against the data
 * and fills entries[].crc32c. Every tensor must be listed, and nothing else. */
static cx_status verify_checksums(const char *path, const char *text, size_t length, st_entry *entries,
                                  size_t n, const unsigned char *data) {
    cx_json_error jerr;
    cx_json_doc *doc = cx_json_parse(text, length, length / 4 + 64, &jerr);
    if (!doc && jerr.pos == (size_t)-1)
        return cx_fail(CX_ENOMEM, "%s: out of memory while reading the tensor checksums", path);
    if (!doc)
        return cx_fail(CX_EIO, "%s: metadata \"%s\" is not valid JSON (at byte %zu: %s)", path, ST_CHECKSUM_KEY,
                       jerr.pos, jerr.message);
    const cx_json_value *root = cx_json_root(doc);
    const st_entry **by_name = malloc((n ? n : 1) * sizeof *by_name);
    cx_status status = CX_OK;
    if (!by_name) {
        status = cx_fail(CX_ENOMEM, "%s: out of memory while checking tensor checksums", path);
        goto done;
    }
    if (root->kind != CX_JSON_OBJECT) {
        status = cx_fail(CX_EIO, "%s: metadata \"%s\" holds %s, expected an object of tensor checksums", path,
                         ST_CHECKSUM_KEY, cx_json_kind_name(root->kind));
        goto done;
    }
    for (size_t k = 0; k < n; k++)
        by_name[k] = &entries[k];
    qsort((void *)by_name, n, sizeof *by_name, name_order);
    for (const cx_json_value *m = root->u.items.first; m; m = m->next) {
        st_entry key = {.name = m->key};
        const st_entry *pkey = &key;
        const st_entry **found = bsearch(&pkey, (void *)by_name, n, sizeof *by_name, name_order);
        uint32_t recorded;
        if (!found) {
            status = cx_fail(CX_EIO, "%s: metadata \"%s\" has a checksum for tensor '%.200s', which the file does "
                             "not hold (renamed or removed?)", path, ST_CHECKSUM_KEY, m->key);
            goto done;
        }
        if (m->kind != CX_JSON_STRING || !parse_hex8(m->u.string.chars, m->u.string.length, &recorded)) {
            status = cx_fail(CX_EIO, "%s: tensor '%.200s': its checksum in metadata \"%s\" is not a string of 8 "
                             "lowercase hex digits", path, m->key, ST_CHECKSUM_KEY);
            goto done;
        }
        st_entry *e = (st_entry *)*found;
        e->has_crc32c = 1;
        e->crc32c = recorded;
    }
    for (size_t k = 0; k < n; k++) {
        st_entry *e = &entries[k];
        if (!e->has_crc32c) {
            status = cx_fail(CX_EIO, "%s: tensor '%.200s' has no checksum in metadata \"%s\" (added by another "
                             "tool?)", path, e->name, ST_CHECKSUM_KEY);
            goto done;
        }
        uint32_t computed = cx_crc32c(0, data + e->begin, (size_t)(e->end - e->begin));
        if (computed != e->crc32c) {
            status = cx_fail(CX_EIO, "%s: tensor '%.200s': checksum mismatch (CRC-32C of its %llu bytes is %08x, the "
                             "file records %08x): the file is corrupted", path, e->name,
                             (unsigned long long)(e->end - e->begin), (unsigned)computed, (unsigned)e->crc32c);
            goto done;
        }
    }
done:
    free((void *)by_name);
    cx_json_free(doc);
    return status;
}

/* Copies src with its NUL to dst; returns the byte after the NUL. */
static char *copy_string(char *dst, const char *src) {
    size_t n = strlen(src) + 1;
    memcpy(dst, src, n);
    return dst + n;
}

static size_t align_up(size_t n) {
    const size_t a = sizeof(max_align_t);
    return (n + a - 1) / a * a;
}

/* Parses and validates the header of the file in buffer[0, size); on success builds
 * *out (which then owns buffer). */
static cx_status parse_header(const char *path, unsigned char *buffer, uint64_t size,
                              uint64_t header_size, cx_st_file **out) {
    const unsigned char *data = buffer + 8 + header_size;
    uint64_t data_size = size - 8 - header_size;
    cx_json_error jerr;
    /* A valid header spends well over 4 bytes per value, so this bound only stops
     * hostile headers from building huge value trees. */
    cx_json_doc *doc = cx_json_parse((const char *)buffer + 8, (size_t)header_size,
                                     (size_t)header_size / 4 + 64, &jerr);
    if (!doc) {
        if (jerr.pos == (size_t)-1)
            return cx_fail(CX_ENOMEM, "%s: out of memory while parsing the safetensors header", path);
        return cx_fail(CX_EIO, "%s: bad JSON in the safetensors header at byte %zu of the header "
                       "(file offset %llu): %s", path, jerr.pos,
                       (unsigned long long)(jerr.pos + 8), jerr.message);
    }
    const cx_json_value *root = cx_json_root(doc);
    cx_status status = CX_OK;
    st_entry *entries = NULL;
    cx_st_file *file = NULL;
    const cx_json_value *metadata = NULL, *checksums = NULL;
    if (root->kind != CX_JSON_OBJECT) {
        status = cx_fail(CX_EIO, "%s: the safetensors header is %s, expected a JSON object", path,
                         cx_json_kind_name(root->kind));
        goto done;
    }
    /* Count entries and the bytes of every string we keep. */
    size_t n_entries = 0, n_meta = 0, chars = strlen(path) + 1;
    for (const cx_json_value *m = root->u.items.first; m; m = m->next) {
        if (!strcmp(m->key, "__metadata__")) {
            metadata = m;
            continue;
        }
        n_entries++;
        chars += strlen(m->key) + 1;
    }
    if (n_entries > INT_MAX) {
        status = cx_fail(CX_EIO, "%s: too many tensors (%zu)", path, n_entries);
        goto done;
    }
    if (metadata) {
        if (metadata->kind != CX_JSON_OBJECT) {
            status = cx_fail(CX_EIO, "%s: \"__metadata__\" is %s, expected an object of strings", path,
                             cx_json_kind_name(metadata->kind));
            goto done;
        }
        for (const cx_json_value *m = metadata->u.items.first; m; m = m->next) {
            if (m->kind != CX_JSON_STRING) {
                status = cx_fail(CX_EIO, "%s: \"__metadata__\" value of \"%.200s\" is %s, expected a string",
                                 path, m->key, cx_json_kind_name(m->kind));
                goto done;
            }
            if (!strcmp(m->key, ST_CHECKSUM_KEY)) {
                checksums = m;
                continue;
            }
            n_meta++;
            chars += strlen(m->key) + 1 + m->u.string.length + 1;
        }
    }
    entries = malloc((n_entries ? n_entries : 1) * sizeof *entries);
    if (!entries) {
        status = cx_fail(CX_ENOMEM, "%s: out of memory for %zu tensor entries", path, n_entries);
        goto done;
    }
    size_t k = 0;
    for (const cx_json_value *m = root->u.items.first; m; m = m->next) {
        if (m == metadata)
            continue;
        status = check_entry(path, m->key, m, data_size, &entries[k++]);
        if (status != CX_OK)
            goto done;
    }
    status = check_coverage(path, entries, n_entries, data_size);
    if (status == CX_OK && checksums)
        status = verify_checksums(path, checksums->u.string.chars, checksums->u.string.length, entries, n_entries,
                                  data);
    if (status != CX_OK)
        goto done;

    /* One allocation: the struct, the tensor table, metadata pointers, then strings. */
    size_t off_tensors = align_up(sizeof(cx_st_file));
    size_t off_keys = align_up(off_tensors + n_entries * sizeof(cx_st_tensor));
    size_t off_values = off_keys + n_meta * sizeof(char *);
    size_t off_chars = off_values + n_meta * sizeof(char *);
    file = calloc(1, off_chars + chars);
    if (!file) {
        status = cx_fail(CX_ENOMEM, "%s: out of memory for the tensor table", path);
        goto done;
    }
    char *base = (char *)file, *text = base + off_chars;
    file->path = text;
    text = copy_string(text, path);
    file->n_tensors = (int)n_entries;
    file->tensors = (cx_st_tensor *)(base + off_tensors);
    for (k = 0; k < n_entries; k++) {
        cx_st_tensor *t = &file->tensors[k];
        t->name = text;
        text = copy_string(text, entries[k].name);
        snprintf(t->dtype, sizeof t->dtype, "%s", entries[k].dtype->name);
        t->ndim = entries[k].ndim;
        memcpy(t->shape, entries[k].shape, sizeof t->shape);
        t->begin = entries[k].begin;
        t->end = entries[k].end;
        t->has_crc32c = entries[k].has_crc32c;
        t->crc32c = entries[k].crc32c;
    }
    file->n_metadata = (int)n_meta;
    file->metadata_keys = (char **)(base + off_keys);
    file->metadata_values = (char **)(base + off_values);
    k = 0;
    if (metadata)
        for (const cx_json_value *m = metadata->u.items.first; m; m = m->next) {
            if (m == checksums)
                continue;
            file->metadata_keys[k] = text;
            text = copy_string(text, m->key);
            file->metadata_values[k] = text;
            text = copy_string(text, m->u.string.chars);
            k++;
        }
    file->data = (unsigned char *)data;
    file->data_size = data_size;
    file->file_buffer = buffer;
    *out = file;
    file = NULL;
done:
    free(file);
    free(entries);
    cx_json_free(doc);
    return status;
}

/* Checks the file size and the header length it starts with (prefix: its first 8 bytes). */
static cx_status check_sizes(const char *path, uint64_t size, const unsigned char *prefix,
                             uint64_t *header_size) {
    if (size < 8)
        return cx_fail(CX_EIO, "%s: file is only %llu bytes, too short for a safetensors file "
                       "(the header length alone takes 8)", path, (unsigned long long)size);
    if (size > (uint64_t)SIZE_MAX - 1)
        return cx_fail(CX_EIO, "%s: file of %llu bytes is too large to load", path, (unsigned long long)size);
    *header_size = load_le64(prefix);
    if (*header_size > size - 8)
        return cx_fail(CX_EIO, "%s: header length %llu exceeds the file size of %llu bytes "
                       "(truncated, or not a safetensors file)", path,
                       (unsigned long long)*header_size, (unsigned long long)size);
    if (*header_size > ST_MAX_HEADER_BYTES)
        return cx_fail(CX_EIO, "%s: header length %llu is absurd (more than %llu bytes)", path,
                       (unsigned long long)*header_size, (unsigned long long)ST_MAX_HEADER_BYTES);
    return CX_OK;
}

cx_status cx_st_open_memory(const char *path, void *buffer, uint64_t size, cx_st_file **out) {
    if (!out) {
        free(buffer);
        return cx_fail(CX_EINVAL, "cx_st_open_memory: out is NULL");
    }
    *out = NULL;
    if (!path || (!buffer && size)) {
        free(buffer);
        return cx_fail(CX_EINVAL, "cx_st_open_memory: path or buffer is NULL");
    }
    uint64_t header_size = 0;
    cx_status status = check_sizes(path, size, buffer, &header_size);
    if (status == CX_OK)
        status = parse_header(path, buffer, size, header_size, out);
    if (status != CX_OK)
        free(buffer);
    return status;
}

cx_status cx_st_open(const char *path, cx_st_file **out) {
    if (!out)
        return cx_fail(CX_EINVAL, "cx_st_open: out is NULL");
    *out = NULL;
    if (!path)
        return cx_fail(CX_EINVAL, "cx_st_open: path is NULL");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cx_fail(CX_EIO, "%s: cannot open safetensors file: %s", path, strerror(errno));
    struct stat info;
    if (fstat(fd, &info) != 0) {
        int err = errno;
        close(fd);
        return cx_fail(CX_EIO, "%s: cannot stat safetensors file: %s", path, strerror(err));
    }
    if (!S_ISREG(info.st_mode)) {
        close(fd);
        return cx_fail(CX_EIO, "%s: cannot read safetensors file: %s", path,
                       S_ISDIR(info.st_mode) ? strerror(EISDIR) : "not a regular file");
    }
    /* Check the sizes before allocating for the whole file. */
    uint64_t size = (uint64_t)info.st_size, header_size = 0;
    unsigned char prefix[8] = {0}, *buffer = NULL;
    int r = size >= 8 ? read_exact(fd, prefix, 8) : 0;
    cx_status status = CX_OK;
    if (r == 0) {
        status = check_sizes(path, size, prefix, &header_size);
        if (status == CX_OK && !(buffer = malloc((size_t)size)))
            status = cx_fail(CX_ENOMEM, "%s: cannot allocate %llu bytes to read the file", path,
                             (unsigned long long)size);
        if (status == CX_OK) {
            memcpy(buffer, prefix, 8);
            r = read_exact(fd, buffer + 8, (size_t)(size - 8));
        }
    }
    if (r < 0)
        status = cx_fail(CX_EIO, "%s: read error: %s", path, strerror(errno));
    else if (r > 0)
        status = cx_fail(CX_EIO, "%s: file ended early while reading (changed on disk?)", path);
    close(fd);
    if (status != CX_OK) {
        free(buffer);
        return status;
    }
    return cx_st_open_memory(path, buffer, size, out);
}

void cx_st_close(cx_st_file *file) {
    if (!file)
        return;
    free(file->file_buffer);
    free(file); /* the struct heads the one allocation holding tables and strings */
}
