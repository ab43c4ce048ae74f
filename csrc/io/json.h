/* A small strict JSON parser (RFC 8259), enough for file headers such as safetensors'.
 *
 * The text need not be NUL-terminated and is never read past `length`. The whole text
 * must be one value surrounded only by whitespace (space, tab, CR, LF); anything else
 * after it is an error. Strings must be valid UTF-8; escapes include \uXXXX with
 * surrogate pairs (a lone surrogate and U+0000 are rejected, so decoded strings are
 * plain NUL-terminated C strings). Objects with a repeated key are rejected. Nesting is
 * limited to CX_JSON_MAX_DEPTH levels and the number of values to a caller-given budget,
 * so a hostile text cannot exhaust the stack or memory.
 *
 * Numbers are checked against the JSON grammar; integers written without fraction or
 * exponent are kept exactly (as sign + uint64 magnitude), other numbers only as "not an
 * integer" (no header we read needs floating-point values). */
#ifndef CX_JSON_H
#define CX_JSON_H

#include <stddef.h>
#include <stdint.h>

#define CX_JSON_MAX_DEPTH 64

typedef enum {
    CX_JSON_NULL,
    CX_JSON_FALSE,
    CX_JSON_TRUE,
    CX_JSON_NUMBER,
    CX_JSON_STRING,
    CX_JSON_ARRAY,
    CX_JSON_OBJECT,
} cx_json_kind;

typedef struct cx_json_value cx_json_value;
struct cx_json_value {
    uint8_t kind;          /* cx_json_kind */
    uint8_t is_integer;    /* NUMBER: no fraction or exponent, and |value| fits in uint64 */
    uint8_t negative;      /* NUMBER: written with a leading '-' */
    size_t pos;            /* byte offset of the value's first character in the text */
    const char *key;       /* member of an object: its key (decoded); otherwise NULL */
    cx_json_value *next;   /* next element or member of the parent, in text order */
    union {
        uint64_t magnitude;                                   /* NUMBER, when is_integer */
        struct { const char *chars; size_t length; } string;  /* STRING (NUL-terminated) */
        struct { cx_json_value *first; size_t count; } items; /* ARRAY, OBJECT */
    } u;
};

typedef struct cx_json_doc cx_json_doc;

typedef struct {
    size_t pos;         /* byte offset in the text where the problem was found */
    char message[160];  /* what was wrong, e.g. "expected ':' after an object key" */
} cx_json_error;

/* Parses text[0, length). max_values bounds the number of values (0: no bound beyond
 * the text length). Returns the document, or NULL with *error filled (error may be NULL).
 * NULL with error->pos == (size_t)-1 means memory ran out. */
cx_json_doc *cx_json_parse(const char *text, size_t length, size_t max_values,
                           cx_json_error *error);
void cx_json_free(cx_json_doc *doc);
const cx_json_value *cx_json_root(const cx_json_doc *doc);

/* The member of object `obj` named `key`, or NULL (also when obj is not an object). */
const cx_json_value *cx_json_member(const cx_json_value *obj, const char *key);
/* 1 and *out set when v is a non-negative integer that fits in uint64; else 0. */
int cx_json_as_u64(const cx_json_value *v, uint64_t *out);
/* "object", "string", "number", ... for messages. */
const char *cx_json_kind_name(int kind);

/* Validates UTF-8 (no overlong forms, surrogates or code points above U+10FFFF).
 * Returns the offset of the first bad byte, or length when the bytes are valid. */
size_t cx_utf8_check(const unsigned char *bytes, size_t length);

#endif
