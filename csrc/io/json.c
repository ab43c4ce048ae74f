/* Strict JSON parser (see json.h). Recursive descent over a bounded text; values and
 * decoded strings live in a chunked arena freed at once by cx_json_free(). */
#include "json.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena -------------------------------------------------------------------------- */

typedef struct arena_block {
    struct arena_block *next;
    size_t used, capacity;
    max_align_t data[];
} arena_block;

struct cx_json_doc {
    arena_block *blocks;
    cx_json_value *root;
};

#define ARENA_BLOCK_BYTES ((size_t)64 * 1024)

#ifdef CX_SANITIZE
#include <sanitizer/asan_interface.h>
/* Under the sanitizers a block starts poisoned; each allocation unpoisons exactly the bytes
 * asked for, and its rounding plus a red zone of RED_ZONE bytes after it stay poisoned, so
 * an off-by-one inside a block is reported as ASan reports one past a malloc'd buffer. */
#define RED_ZONE sizeof(max_align_t)
#define POISON(ptr, bytes) ASAN_POISON_MEMORY_REGION(ptr, bytes)
#define UNPOISON(ptr, bytes) ASAN_UNPOISON_MEMORY_REGION(ptr, bytes)
#else
#define RED_ZONE 0
#define POISON(ptr, bytes) ((void)(ptr), (void)(bytes))
#define UNPOISON(ptr, bytes) ((void)(ptr), (void)(bytes))
#endif

static void *arena_alloc(cx_json_doc *doc, size_t bytes) {
    const size_t align = sizeof(max_align_t);
    if (bytes > SIZE_MAX / 2)
        return NULL;
    const size_t asked = bytes;
    bytes = (bytes + align - 1) / align * align + RED_ZONE;
    arena_block *head = doc->blocks;
    if (!head || head->capacity - head->used < bytes) {
        size_t capacity = bytes > ARENA_BLOCK_BYTES ? bytes : ARENA_BLOCK_BYTES;
        arena_block *block = malloc(sizeof *block + capacity);
        if (!block)
            return NULL;
        block->used = 0;
        block->capacity = capacity;
        block->next = head;
        doc->blocks = block;
        head = block;
        POISON(block->data, capacity); /* the unused tail stays poisoned */
    }
    void *ptr = (char *)head->data + head->used;
    head->used += bytes;
    UNPOISON(ptr, asked);
    return ptr;
}

void cx_json_free(cx_json_doc *doc) {
    if (!doc)
        return;
    arena_block *block = doc->blocks;
    while (block) {
        arena_block *next = block->next;
        UNPOISON(block->data, block->capacity); /* the allocator gets back plain memory */
        free(block);
        block = next;
    }
    free(doc);
}

/* ---- UTF-8 -------------------------------------------------------------------------- */

/* Length (1..4) of the well-formed UTF-8 sequence at s[0, avail), or 0 when it is not. */
static size_t utf8_sequence(const unsigned char *s, size_t avail) {
    unsigned c = s[0];
    if (c < 0x80)
        return 1;
    size_t n;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c < 0xC2)
        return 0; /* stray continuation byte or overlong 2-byte form */
    else if (c < 0xE0)
        n = 2;
    else if (c < 0xF0) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0; /* overlong */
        if (c == 0xED)
            hi = 0x9F; /* UTF-16 surrogates */
    } else if (c < 0xF5) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90; /* overlong */
        if (c == 0xF4)
            hi = 0x8F; /* above U+10FFFF */
    } else
        return 0;
    if (avail < n || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t k = 2; k < n; k++)
        if ((s[k] & 0xC0) != 0x80)
            return 0;
    return n;
}

size_t cx_utf8_check(const unsigned char *bytes, size_t length) {
    size_t i = 0;
    while (i < length) {
        size_t n = utf8_sequence(bytes + i, length - i);
        if (!n)
            return i;
        i += n;
    }
    return length;
}

static size_t utf8_encode(uint32_t code, char *out) {
    if (code < 0x80) {
        out[0] = (char)code;
        return 1;
    }
    if (code < 0x800) {
        out[0] = (char)(0xC0 | (code >> 6));
        out[1] = (char)(0x80 | (code & 0x3F));
        return 2;
    }
    if (code < 0x10000) {
        out[0] = (char)(0xE0 | (code >> 12));
        out[1] = (char)(0x80 | ((code >> 6) & 0x3F));
        out[2] = (char)(0x80 | (code & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (code >> 18));
    out[1] = (char)(0x80 | ((code >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((code >> 6) & 0x3F));
    out[3] = (char)(0x80 | (code & 0x3F));
    return 4;
}

/* ---- parser ------------------------------------------------------------------------- */

typedef struct {
    const unsigned char *text;
    size_t length, at;
    size_t n_values, max_values;
    cx_json_doc *doc;
    cx_json_error *error;
} parser;

static void *fail_at(parser *p, size_t pos, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void *fail_at(parser *p, size_t pos, const char *fmt, ...) {
    if (p->error) {
        p->error->pos = pos;
        va_list args;
        va_start(args, fmt);
        vsnprintf(p->error->message, sizeof p->error->message, fmt, args);
        va_end(args);
    }
    return NULL;
}

static void *fail_memory(parser *p) {
    return fail_at(p, (size_t)-1, "out of memory while parsing JSON");
}

static void skip_space(parser *p) {
    while (p->at < p->length) {
        unsigned char c = p->text[p->at];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->at++;
    }
}

/* Describes the byte at pos for messages: 'x', byte 0xNN, or end of text. */
static const char *describe(const parser *p, size_t pos, char buf[32]) {
    if (pos >= p->length)
        return "the end of the text";
    unsigned c = p->text[pos];
    if (c >= 0x21 && c < 0x7F)
        snprintf(buf, 32, "'%c'", (char)c);
    else
        snprintf(buf, 32, "byte 0x%02X", c);
    return buf;
}

static cx_json_value *new_value(parser *p, int kind, size_t pos) {
    if (p->n_values >= p->max_values)
        return fail_at(p, pos, "more than %zu values", p->max_values);
    cx_json_value *v = arena_alloc(p->doc, sizeof *v);
    if (!v)
        return fail_memory(p);
    memset(v, 0, sizeof *v);
    v->kind = (uint8_t)kind;
    v->pos = pos;
    p->n_values++;
    return v;
}

static int hex4(const unsigned char *s, uint32_t *out) {
    uint32_t code = 0;
    for (int k = 0; k < 4; k++) {
        unsigned c = s[k], d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            d = c - 'A' + 10;
        else
            return 0;
        code = code * 16 + d;
    }
    *out = code;
    return 1;
}

/* Parses the string whose opening quote is at p->at; returns the decoded text (in the
 * arena, NUL-terminated) and its length, leaving p->at after the closing quote. */
static char *parse_string(parser *p, size_t *out_length) {
    const unsigned char *s = p->text;
    size_t open = p->at, begin = open + 1, close = begin;
    /* Find the closing quote: every backslash escapes the next byte. */
    while (close < p->length && s[close] != '"')
        close += s[close] == '\\' ? 2 : 1;
    if (close >= p->length)
        return fail_at(p, open, "unterminated string");
    /* Decoding never lengthens: an escape of n bytes yields at most n bytes of UTF-8. */
    char *out = arena_alloc(p->doc, close - begin + 1);
    if (!out)
        return fail_memory(p);
    size_t n = 0, i = begin;
    while (i < close) {
        unsigned c = s[i];
        if (c < 0x20)
            return fail_at(p, i, "control character 0x%02X inside a string (must be escaped)", c);
        if (c >= 0x80) {
            size_t len = utf8_sequence(s + i, close - i);
            if (!len)
                return fail_at(p, i, "invalid UTF-8 in a string");
            memcpy(out + n, s + i, len);
            n += len;
            i += len;
            continue;
        }
        if (c != '\\') {
            out[n++] = (char)c;
            i++;
            continue;
        }
        unsigned esc = s[i + 1]; /* i + 1 < close, see the scan above */
        char simple = 0;
        switch (esc) {
        case '"': simple = '"'; break;
        case '\\': simple = '\\'; break;
        case '/': simple = '/'; break;
        case 'b': simple = '\b'; break;
        case 'f': simple = '\f'; break;
        case 'n': simple = '\n'; break;
        case 'r': simple = '\r'; break;
        case 't': simple = '\t'; break;
        case 'u': break;
        default: return fail_at(p, i, "invalid escape '\\%c'", esc >= 0x20 && esc < 0x7F ? (char)esc : '?');
        }
        if (simple) {
            out[n++] = simple;
            i += 2;
            continue;
        }
        uint32_t code;
        if (close - i < 6 || !hex4(s + i + 2, &code))
            return fail_at(p, i, "\\u must be followed by 4 hex digits");
        size_t used = 6;
        if (code >= 0xD800 && code <= 0xDBFF) {
            uint32_t low;
            if (close - i < 12 || s[i + 6] != '\\' || s[i + 7] != 'u' || !hex4(s + i + 8, &low) ||
                low < 0xDC00 || low > 0xDFFF)
                return fail_at(p, i, "\\u%04X is a high surrogate without a low surrogate after it", (unsigned)code);
            code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
            used = 12;
        } else if (code >= 0xDC00 && code <= 0xDFFF) {
            return fail_at(p, i, "\\u%04X is a lone low surrogate", (unsigned)code);
        } else if (code == 0) {
            return fail_at(p, i, "\\u0000 (NUL) inside a string is not supported");
        }
        n += utf8_encode(code, out + n);
        i += used;
    }
    out[n] = '\0';
    *out_length = n;
    p->at = close + 1;
    return out;
}

static cx_json_value *parse_number(parser *p) {
    const unsigned char *s = p->text;
    size_t start = p->at, i = start;
    int negative = 0, integer = 1, overflow = 0;
    uint64_t magnitude = 0;
    if (s[i] == '-') {
        negative = 1;
        i++;
    }
    if (i >= p->length || s[i] < '0' || s[i] > '9')
        return fail_at(p, i, "expected a digit in a number");
    if (s[i] == '0') {
        i++;
    } else {
        while (i < p->length && s[i] >= '0' && s[i] <= '9') {
            unsigned d = s[i] - '0';
            if (magnitude > (UINT64_MAX - d) / 10)
                overflow = 1;
            else
                magnitude = magnitude * 10 + d;
            i++;
        }
    }
    if (i < p->length && s[i] == '.') {
        integer = 0;
        i++;
        if (i >= p->length || s[i] < '0' || s[i] > '9')
            return fail_at(p, i, "expected a digit after '.' in a number");
        while (i < p->length && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    if (i < p->length && (s[i] == 'e' || s[i] == 'E')) {
        integer = 0;
        i++;
        if (i < p->length && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= p->length || s[i] < '0' || s[i] > '9')
            return fail_at(p, i, "expected a digit in a number's exponent");
        while (i < p->length && s[i] >= '0' && s[i] <= '9')
            i++;
    }
    cx_json_value *v = new_value(p, CX_JSON_NUMBER, start);
    if (!v)
        return NULL;
    v->is_integer = (uint8_t)(integer && !overflow);
    v->negative = (uint8_t)negative;
    v->u.magnitude = v->is_integer ? magnitude : 0;
    p->at = i;
    return v;
}

static int key_order(const void *a, const void *b) {
    const cx_json_value *x = *(const cx_json_value *const *)a, *y = *(const cx_json_value *const *)b;
    int c = strcmp(x->key, y->key);
    if (c)
        return c;
    return x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* Rejects an object whose members repeat a key, naming the later occurrence. */
static int check_unique_keys(parser *p, const cx_json_value *obj) {
    size_t n = obj->u.items.count;
    if (n < 2)
        return 1;
    if (n <= 8) {
        for (const cx_json_value *a = obj->u.items.first; a; a = a->next)
            for (const cx_json_value *b = a->next; b; b = b->next)
                if (!strcmp(a->key, b->key)) {
                    fail_at(p, b->pos, "duplicate key \"%.80s\"", b->key);
                    return 0;
                }
        return 1;
    }
    const cx_json_value **sorted = malloc(n * sizeof *sorted);
    if (!sorted) {
        fail_memory(p);
        return 0;
    }
    size_t k = 0;
    for (const cx_json_value *a = obj->u.items.first; a; a = a->next)
        sorted[k++] = a;
    qsort(sorted, n, sizeof *sorted, key_order);
    int ok = 1;
    for (k = 1; k < n && ok; k++)
        if (!strcmp(sorted[k - 1]->key, sorted[k]->key)) {
            fail_at(p, sorted[k]->pos, "duplicate key \"%.80s\"", sorted[k]->key);
            ok = 0;
        }
    free((void *)sorted);
    return ok;
}

static cx_json_value *parse_value(parser *p, int depth);

/* Parses an array (close = ']') or object (close = '}') whose opener is at p->at. */
static cx_json_value *parse_container(parser *p, int depth, int kind) {
    size_t start = p->at;
    int is_object = kind == CX_JSON_OBJECT;
    char close = is_object ? '}' : ']';
    char buf[32];
    if (depth >= CX_JSON_MAX_DEPTH)
        return fail_at(p, start, "nesting deeper than %d levels", CX_JSON_MAX_DEPTH);
    cx_json_value *v = new_value(p, kind, start);
    if (!v)
        return NULL;
    p->at++;
    skip_space(p);
    if (p->at < p->length && p->text[p->at] == (unsigned char)close) {
        p->at++;
        return v;
    }
    cx_json_value *last = NULL;
    for (;;) {
        const char *key = NULL;
        skip_space(p);
        if (is_object) {
            if (p->at >= p->length || p->text[p->at] != '"')
                return fail_at(p, p->at, "expected a string key, found %s", describe(p, p->at, buf));
            size_t key_length;
            key = parse_string(p, &key_length);
            if (!key)
                return NULL;
            skip_space(p);
            if (p->at >= p->length || p->text[p->at] != ':')
                return fail_at(p, p->at, "expected ':' after an object key, found %s", describe(p, p->at, buf));
            p->at++;
        }
        cx_json_value *item = parse_value(p, depth + 1);
        if (!item)
            return NULL;
        item->key = key;
        if (last)
            last->next = item;
        else
            v->u.items.first = item;
        last = item;
        v->u.items.count++;
        skip_space(p);
        if (p->at < p->length && p->text[p->at] == ',') {
            p->at++;
            continue;
        }
        if (p->at < p->length && p->text[p->at] == (unsigned char)close) {
            p->at++;
            break;
        }
        return fail_at(p, p->at, "expected ',' or '%c', found %s", close, describe(p, p->at, buf));
    }
    if (is_object && !check_unique_keys(p, v))
        return NULL;
    return v;
}

static cx_json_value *parse_literal(parser *p, const char *word, int kind) {
    size_t n = strlen(word);
    if (p->length - p->at < n || memcmp(p->text + p->at, word, n) != 0)
        return fail_at(p, p->at, "invalid literal (expected %s)", word);
    cx_json_value *v = new_value(p, kind, p->at);
    if (v)
        p->at += n;
    return v;
}

static cx_json_value *parse_value(parser *p, int depth) {
    char buf[32];
    skip_space(p);
    if (p->at >= p->length)
        return fail_at(p, p->at, "expected a value, found the end of the text");
    unsigned char c = p->text[p->at];
    switch (c) {
    case '{': return parse_container(p, depth, CX_JSON_OBJECT);
    case '[': return parse_container(p, depth, CX_JSON_ARRAY);
    case '"': {
        size_t start = p->at, length;
        cx_json_value *v = new_value(p, CX_JSON_STRING, start);
        if (!v)
            return NULL;
        const char *chars = parse_string(p, &length);
        if (!chars)
            return NULL;
        v->u.string.chars = chars;
        v->u.string.length = length;
        return v;
    }
    case 't': return parse_literal(p, "true", CX_JSON_TRUE);
    case 'f': return parse_literal(p, "false", CX_JSON_FALSE);
    case 'n': return parse_literal(p, "null", CX_JSON_NULL);
    default:
        if (c == '-' || (c >= '0' && c <= '9'))
            return parse_number(p);
        return fail_at(p, p->at, "expected a value, found %s", describe(p, p->at, buf));
    }
}

cx_json_doc *cx_json_parse(const char *text, size_t length, size_t max_values,
                           cx_json_error *error) {
    cx_json_error ignored;
    if (!error)
        error = &ignored;
    error->pos = 0;
    error->message[0] = '\0';
    if (!text && length) {
        fail_at(&(parser){.error = error}, 0, "no text");
        return NULL;
    }
    cx_json_doc *doc = calloc(1, sizeof *doc);
    if (!doc) {
        fail_memory(&(parser){.error = error});
        return NULL;
    }
    parser p = {
        .text = (const unsigned char *)text, .length = length, .at = 0,
        .n_values = 0, .max_values = max_values ? max_values : SIZE_MAX,
        .doc = doc, .error = error,
    };
    doc->root = parse_value(&p, 0);
    if (doc->root) {
        skip_space(&p);
        if (p.at != p.length) {
            char buf[32];
            fail_at(&p, p.at, "unexpected %s after the JSON value", describe(&p, p.at, buf));
            doc->root = NULL;
        }
    }
    if (!doc->root) {
        cx_json_free(doc);
        return NULL;
    }
    return doc;
}

const cx_json_value *cx_json_root(const cx_json_doc *doc) { return doc ? doc->root : NULL; }

const cx_json_value *cx_json_member(const cx_json_value *obj, const char *key) {
    if (!obj || obj->kind != CX_JSON_OBJECT)
        return NULL;
    for (const cx_json_value *m = obj->u.items.first; m; m = m->next)
        if (!strcmp(m->key, key))
            return m;
    return NULL;
}

int cx_json_as_u64(const cx_json_value *v, uint64_t *out) {
    if (!v || v->kind != CX_JSON_NUMBER || !v->is_integer)
        return 0;
    if (v->negative && v->u.magnitude != 0)
        return 0;
    *out = v->u.magnitude;
    return 1;
}

const char *cx_json_kind_name(int kind) {
    switch (kind) {
    case CX_JSON_NULL: return "null";
    case CX_JSON_FALSE: return "false";
    case CX_JSON_TRUE: return "true";
    case CX_JSON_NUMBER: return "a number";
    case CX_JSON_STRING: return "a string";
    case CX_JSON_ARRAY: return "an array";
    case CX_JSON_OBJECT: return "an object";
    default: return "an unknown value";
    }
}
