/* safetensors reading and writing.
 *
 * Format: 8-byte little-endian header length N, then N bytes of JSON
 *   {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"key": "string value", ...}}
 * (padded with spaces), then the data block; offsets are relative to the data block
 * and need not be aligned. Reading accepts F32, F16 and BF16 (converted to float32)
 * and F64 (converted to float32). Every structural problem (header length beyond the
 * file, malformed JSON, unknown dtype, shape/offset size mismatch, offsets out of range
 * or overlapping) fails with CX_EIO and a message naming the file and the tensor. */
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
} cx_st_tensor;

typedef struct {
    char *path;
    int n_tensors;
    cx_st_tensor *tensors; /* in the order of the header */
    int n_metadata;
    char **metadata_keys;
    char **metadata_values;
    unsigned char *data;   /* the data block (whole file read into memory) */
    uint64_t data_size;
    void *file_buffer;     /* owning allocation */
} cx_st_file;

/* Reads and validates the whole file. On success *out owns everything; free it with
 * cx_st_close(). */
cx_status cx_st_open(const char *path, cx_st_file **out);
void cx_st_close(cx_st_file *file);
/* Number of elements of tensor i. */
int64_t cx_st_numel(const cx_st_file *file, int i);
/* Converts tensor i to float32 into out[numel]. */
cx_status cx_st_read_f32(const cx_st_file *file, int i, float *out);

/* Writes float32 tensors (names in the given order) and string metadata atomically:
 * to "<path>.tmp.<pid>", fsync, rename over path, fsync of the directory. Fails with
 * CX_EIO naming the path when it cannot be written; an existing file is then left
 * untouched. */
cx_status cx_st_write_f32(const char *path, int n_tensors, const char *const *names,
                          const int *ndims, const int64_t *const *shapes,
                          const float *const *data, int n_metadata,
                          const char *const *metadata_keys,
                          const char *const *metadata_values);

#endif
