/* safetensors reading and writing.
 *
 * Format: 8-byte little-endian header length N, then N bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"key": "string value", ...}}
 * (padded with spaces), then the data block; offsets are relative to the data block
 * and need not be aligned. Reading accepts F32, F16 and BF16 (converted to float32)
 * and F64 (converted to float32). As in the reference implementation, the tensors must
 * cover the data block exactly: sorted by offsets, each begins where the previous one
 * ends, the first at 0 and the last at the end of the file (no gaps, overlaps or
 * trailing bytes). Every structural problem (header length beyond the file, malformed
 * JSON, unknown dtype, shape/offset size mismatch, offsets out of range, gaps,
 * overlaps) fails with CX_EIO and a message naming the file and the tensor.
 *
 * Beyond the format: our writer records a CRC-32C of each tensor's bytes in the
 * metadata entry "codext_crc32c" (ST_CHECKSUM_KEY), whose string value is a JSON object
 * {"tensor name": "8 lowercase hex digits", ...} naming every tensor. When a file has
 * that entry, reading verifies it (every tensor listed, no other names, each CRC
 * matching) and fails with CX_EIO naming the file and the tensor otherwise; the entry
 * is then not among the metadata handed out. Files without it (written by other tools)
 * load unchecked. Other readers see it as one more metadata string. */
#ifndef CX_SAFETENSORS_H
#define CX_SAFETENSORS_H

#include "../core/cx.h"

#define CX_ST_MAX_DIMS 8

typedef struct {
    char *name;
    char dtype[8];   /* "F32", "F16", "BF16", "F64" */
    int ndim;
    int64_t shape[CX_ST_MAX_DIMS];
    uint64_t begin, end; /* byte offsets within the data block */
    int has_crc32c;      /* the file recorded a checksum for this tensor (verified) */
    uint32_t crc32c;     /* CRC-32C of data[begin, end), when has_crc32c */
} cx_st_tensor;

typedef struct {
    char *path;
    int n_tensors;
    cx_st_tensor *tensors; /* in the order of the header */
    int n_metadata;        /* "codext_crc32c" not included */
    char **metadata_keys;
    char **metadata_values;
    unsigned char *data;   /* the data block (whole file read into memory) */
    uint64_t data_size;
    void *file_buffer;     /* owning allocation */
} cx_st_file;

/* Reads and validates the whole file. On success *out owns everything; free it with
 * cx_st_close(). */
cx_status cx_st_open(const char *path, cx_st_file **out);
/* The same for a whole file already in memory: buffer[0, size) (allocated with
 * malloc) becomes owned by *out on success and is freed on failure. `path` only names
 * the file in messages. */
cx_status cx_st_open_memory(const char *path, void *buffer, uint64_t size, cx_st_file **out);
void cx_st_close(cx_st_file *file);
/* Number of elements of tensor i. */
int64_t cx_st_numel(const cx_st_file *file, int i);
/* Converts tensor i to float32 into out[numel]. */
cx_status cx_st_read_f32(const cx_st_file *file, int i, float *out);

/* Writes float32 tensors (names in the given order), string metadata and a CRC-32C of
 * each tensor (metadata "codext_crc32c", a reserved key) atomically:
 * to "<path>.tmp.<pid>", fsync, rename over path, fsync of the directory. Fails with
 * CX_EIO naming the path when it cannot be written; an existing file is then left
 * untouched. */
cx_status cx_st_write_f32(const char *path, int n_tensors, const char *const *names,
                          const int *ndims, const int64_t *const *shapes,
                          const float *const *data, int n_metadata,
                          const char *const *metadata_keys,
                          const char *const *metadata_values);

#endif
