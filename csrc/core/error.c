/* Thread-local error messages (see cx.h). */
#include "cx.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define CX_ERROR_CAP 2048
static _Thread_local char error_message[CX_ERROR_CAP];

cx_status cx_fail(cx_status code, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(error_message, sizeof error_message, fmt, args);
    va_end(args);
    return code;
}

cx_status cx_fail_context(cx_status code, const char *fmt, ...) {
    char previous[CX_ERROR_CAP];
    memcpy(previous, error_message, sizeof previous);
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(error_message, sizeof error_message, fmt, args);
    va_end(args);
    if (n >= 0 && (size_t)n < sizeof error_message)
        snprintf(error_message + n, sizeof error_message - (size_t)n, "%s", previous);
    return code;
}

const char *cx_last_error(void) {
    return error_message[0] ? error_message : "unknown error (no message recorded)";
}

void cx_clear_error(void) { error_message[0] = '\0'; }
