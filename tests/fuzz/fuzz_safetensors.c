/* libFuzzer harness for the safetensors reader (csrc/io/safetensors.c): header parsing,
 * validation against the data block, checksums and the float32 conversions.
 *
 * Input: the bytes of a whole file. Beyond "no crash, no sanitizer report, no hang", a
 * file that opens must satisfy what safetensors.h promises, checked here independently:
 * - tensor names unique and never "__metadata__"; at most CX_ST_MAX_DIMS dims;
 * - each tensor's byte range matches its shape and dtype, and the ranges, sorted, tile
 *   the data block exactly (nothing before, between or after them);
 * - a tensor that says it had a checksum matches it; "codext_crc32c" is not handed out
 *   as metadata; metadata keys and values are valid UTF-8;
 * - every tensor of a convertible dtype reads as float32, the others fail cleanly.
 * A file that fails must leave a message naming it. A broken promise is reported with
 * __builtin_trap(), which libFuzzer records as a crash. */
#include "core/cx.h"
#include "io/crc32c.h"
#include "io/json.h"
#include "io/safetensors.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                        \
    do {                                                                   \
        if (!(cond)) {                                                     \
            fprintf(stderr, "fuzz_safetensors: broken promise: %s (line %d)\n", #cond, __LINE__); \
            __builtin_trap();                                              \
        }                                                                  \
    } while (0)

static const char NAME[] = "fuzz-input.safetensors";

static int element_bits(const char *dtype) {
    static const struct { const char *name; int bits; } table[] = {
        {"F64", 64}, {"F32", 32}, {"F16", 16}, {"BF16", 16}, {"I64", 64}, {"I32", 32},
        {"I16", 16}, {"I8", 8}, {"U64", 64}, {"U32", 32}, {"U16", 16}, {"U8", 8},
        {"BOOL", 8}, {"C64", 64}, {"F8_E5M2", 8}, {"F8_E4M3", 8}, {"F8_E8M0", 8},
        {"F6_E2M3", 6}, {"F6_E3M2", 6}, {"F4", 4},
    };
    for (size_t k = 0; k < sizeof table / sizeof table[0]; k++)
        if (!strcmp(table[k].name, dtype))
            return table[k].bits;
    return 0;
}

static int by_range(const void *a, const void *b) {
    const cx_st_tensor *x = *(const cx_st_tensor *const *)a, *y = *(const cx_st_tensor *const *)b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return (x->end > y->end) - (x->end < y->end);
}

static int utf8_ok(const char *s) { return cx_utf8_check((const unsigned char *)s, strlen(s)) == strlen(s); }

static void check_file(const cx_st_file *f, size_t size, int header_has_checksums) {
    CHECK(f->n_tensors >= 0 && f->n_metadata >= 0 && !strcmp(f->path, NAME));
    CHECK(f->data_size <= size && f->data + f->data_size == (const unsigned char *)f->file_buffer + size);
    const cx_st_tensor **sorted = malloc(((size_t)f->n_tensors + 1) * sizeof *sorted);
    CHECK(sorted != NULL);
    for (int i = 0; i < f->n_tensors; i++) {
        const cx_st_tensor *t = &f->tensors[i];
        sorted[i] = t;
        CHECK(strcmp(t->name, "__metadata__") != 0 && utf8_ok(t->name));
        CHECK(t->ndim >= 0 && t->ndim <= CX_ST_MAX_DIMS);
        int bits = element_bits(t->dtype);
        CHECK(bits > 0);
        /* The shape's element count, and the bytes it needs, without overflow. */
        unsigned __int128 numel = 1;
        for (int d = 0; d < t->ndim; d++) {
            CHECK(t->shape[d] >= 0);
            numel *= (unsigned __int128)t->shape[d];
            if (numel > ((unsigned __int128)1 << 100))
                numel = (unsigned __int128)1 << 100; /* stays above any span */
        }
        CHECK(t->begin <= t->end && t->end <= f->data_size);
        CHECK(numel * (unsigned)bits == (unsigned __int128)(t->end - t->begin) * 8);
        for (int j = 0; j < i; j++)
            CHECK(strcmp(f->tensors[j].name, t->name) != 0);
        if (t->has_crc32c)
            CHECK(cx_crc32c(0, f->data + t->begin, (size_t)(t->end - t->begin)) == t->crc32c);
        else
            CHECK(t->crc32c == 0);
    }
    qsort((void *)sorted, (size_t)f->n_tensors, sizeof *sorted, by_range);
    uint64_t covered = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        CHECK(sorted[i]->begin == covered);
        covered = sorted[i]->end;
    }
    CHECK(covered == f->data_size);
    free((void *)sorted);
    for (int k = 0; k < f->n_metadata; k++) {
        CHECK(utf8_ok(f->metadata_keys[k]) && utf8_ok(f->metadata_values[k]));
        CHECK(strcmp(f->metadata_keys[k], "codext_crc32c") != 0);
    }
    /* Checksums are all or nothing: all when the header records them, else none. */
    for (int i = 0; i < f->n_tensors; i++)
        CHECK(f->tensors[i].has_crc32c == header_has_checksums);
    for (int i = 0; i < f->n_tensors; i++) {
        const cx_st_tensor *t = &f->tensors[i];
        int64_t numel = cx_st_numel(f, i);
        CHECK(numel >= 0);
        int convertible = !strcmp(t->dtype, "F32") || !strcmp(t->dtype, "F16") || !strcmp(t->dtype, "BF16") ||
                          !strcmp(t->dtype, "F64");
        /* numel <= data bytes for these dtypes (>= 2 bytes each), so the copy is small;
         * the other dtypes must fail before writing anything. */
        float *out = malloc(convertible ? (size_t)numel * sizeof(float) + 1 : 1);
        CHECK(out != NULL);
        cx_clear_error();
        cx_status st = cx_st_read_f32(f, i, out);
        CHECK((st == CX_OK) == convertible);
        if (!convertible)
            CHECK(strstr(cx_last_error(), NAME) && strstr(cx_last_error(), t->name));
        free(out);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    unsigned char *buffer = malloc(size ? size : 1);
    if (!buffer)
        return 0;
    memcpy(buffer, data, size);
    cx_st_file *f = NULL;
    cx_clear_error();
    cx_status st = cx_st_open_memory(NAME, buffer, size, &f); /* takes the buffer */
    if (st != CX_OK) {
        CHECK(f == NULL && (st == CX_EIO || st == CX_ENOMEM));
        CHECK(strstr(cx_last_error(), NAME) != NULL);
        return 0;
    }
    /* Whether the header records checksums, read here from the header itself. */
    uint64_t header_size = 0;
    for (int k = 7; k >= 0; k--)
        header_size = header_size << 8 | data[k];
    cx_json_doc *header = cx_json_parse((const char *)data + 8, (size_t)header_size, 0, NULL);
    CHECK(header != NULL);
    const cx_json_value *metadata = cx_json_member(cx_json_root(header), "__metadata__");
    int has_checksums = cx_json_member(metadata, "codext_crc32c") != NULL;
    cx_json_free(header);
    check_file(f, size, has_checksums);
    cx_st_close(f);
    return 0;
}
