/* lazydeps.c: the functions pingvas calls in libcurl, libssl, libmicrohttpd, SQLite, libpq, hiredis
 * and libwebsockets, each loading its library on first use (lib/lazylib.h says why). The headers
 * check every signature here against the library's own declaration; a library pingvas starts
 * calling needs its function added to the table below (the link fails until it is).
 * Variadic functions are forwarded by hand, through their va_list variant where the library has
 * one. */
#include <curl/curl.h>
#include <libwebsockets.h>
#include <microhttpd.h>
#include <openssl/ssl.h>
#include <sqlite3.h>
#include <stdarg.h>
#ifdef PINGVAS_HAVE_PQ
#include <libpq-fe.h>
#endif
#ifdef PINGVAS_HAVE_HIREDIS
#include <hiredis/hiredis.h>
#endif

#include "lib/lazylib.h"

/* Table rows: X(return type, name, (parameters), (arguments)), XV for a function returning
 * void, XH for one resolved here but called by a hand-written definition below. */
#define LZ_IDX(ret, name, params, args) LZ_##name,
#define LZ_IDXV(name, params, args) LZ_##name,
#define LZ_IDXH(name) LZ_##name,
#define LZ_NAME(ret, name, params, args) #name,
#define LZ_NAMEV(name, params, args) #name,
#define LZ_NAMEH(name) #name,
#define LZ_DEF(ret, name, params, args)                                                            \
    ret name params                                                                                \
    {                                                                                              \
        return ((ret(*) params)lazylib_fn(&LZ_LIB, LZ_##name))args;                                \
    }
#define LZ_DEFV(name, params, args)                                                                \
    void name params                                                                               \
    {                                                                                              \
        ((void(*) params)lazylib_fn(&LZ_LIB, LZ_##name)) args;                                     \
    }
#define LZ_SKIP(name)
/* The index enum, the names, the table and the library of one table. */
#define LZ_LIBRARY(var, fns, soname, package)                                                      \
    enum { fns(LZ_IDX, LZ_IDXV, LZ_IDXH) var##_n };                                                \
    static const char *const var##_names[] = {fns(LZ_NAME, LZ_NAMEV, LZ_NAMEH)};                   \
    static void *var##_fns[var##_n];                                                               \
    static lazylib_t var = {                                                                       \
        soname, package, var##_names, var##_fns, var##_n, 0, PTHREAD_MUTEX_INITIALIZER};

#define CURL_FNS(X, XV, XH)                                                                        \
    XV(curl_easy_cleanup, (CURL * a0), (a0))                                                       \
    XH(curl_easy_getinfo)                                                                          \
    X(CURL *, curl_easy_init, (void), ())                                                          \
    X(CURLcode, curl_easy_perform, (CURL * a0), (a0))                                              \
    XV(curl_easy_reset, (CURL * a0), (a0))                                                         \
    XH(curl_easy_setopt)                                                                           \
    X(const char *, curl_easy_strerror, (CURLcode a0), (a0))                                       \
    XV(curl_free, (void *a0), (a0))                                                                \
    XH(curl_global_cleanup)                                                                        \
    X(CURLcode, curl_global_init, (long a0), (a0))                                                 \
    X(CURLMcode, curl_multi_add_handle, (CURLM * a0, CURL * a1), (a0, a1))                         \
    X(CURLMcode, curl_multi_cleanup, (CURLM * a0), (a0))                                           \
    X(CURLMsg *, curl_multi_info_read, (CURLM * a0, int *a1), (a0, a1))                            \
    X(CURLM *, curl_multi_init, (void), ())                                                        \
    X(CURLMcode, curl_multi_perform, (CURLM * a0, int *a1), (a0, a1))                              \
    X(CURLMcode, curl_multi_poll,                                                                  \
      (CURLM * a0, struct curl_waitfd a1[], unsigned int a2, int a3, int *a4),                     \
      (a0, a1, a2, a3, a4))                                                                        \
    X(CURLMcode, curl_multi_remove_handle, (CURLM * a0, CURL * a1), (a0, a1))                      \
    XH(curl_multi_setopt)                                                                          \
    X(struct curl_slist *, curl_slist_append, (struct curl_slist * a0, const char *a1), (a0, a1))  \
    XV(curl_slist_free_all, (struct curl_slist * a0), (a0))                                        \
    X(CURLU *, curl_url, (void), ())                                                               \
    XV(curl_url_cleanup, (CURLU * a0), (a0))                                                       \
    X(CURLUcode, curl_url_get, (CURLU * a0, CURLUPart a1, char **a2, unsigned int a3),             \
      (a0, a1, a2, a3))                                                                            \
    X(CURLUcode, curl_url_set, (CURLU * a0, CURLUPart a1, const char *a2, unsigned int a3),        \
      (a0, a1, a2, a3))                                                                            \
    X(const char *, curl_url_strerror, (CURLUcode a0), (a0))
LZ_LIBRARY(curl_lib, CURL_FNS, "libcurl.so.4", "libcurl4")
#define LZ_LIB curl_lib
CURL_FNS(LZ_DEF, LZ_DEFV, LZ_SKIP)
#undef LZ_LIB

/* Options take a long, a pointer (object, string, list, callback, blob) or a curl_off_t, by
 * their number's range, as libcurl itself reads them. */
CURLcode(curl_easy_setopt)(CURL *c, CURLoption o, ...)
{
    CURLcode (*fn)(CURL *, CURLoption, ...) =
        (CURLcode(*)(CURL *, CURLoption, ...))lazylib_fn(&curl_lib, LZ_curl_easy_setopt);
    va_list ap;
    va_start(ap, o);
    CURLcode rc;
    if ((long)o < CURLOPTTYPE_OBJECTPOINT)
        rc = fn(c, o, va_arg(ap, long));
    else if ((long)o >= CURLOPTTYPE_OFF_T && (long)o < CURLOPTTYPE_BLOB)
        rc = fn(c, o, va_arg(ap, curl_off_t));
    else
        rc = fn(c, o, va_arg(ap, void *));
    va_end(ap);
    return rc;
}

CURLMcode(curl_multi_setopt)(CURLM *m, CURLMoption o, ...)
{
    CURLMcode (*fn)(CURLM *, CURLMoption, ...) =
        (CURLMcode(*)(CURLM *, CURLMoption, ...))lazylib_fn(&curl_lib, LZ_curl_multi_setopt);
    va_list ap;
    va_start(ap, o);
    CURLMcode rc;
    if ((long)o < CURLOPTTYPE_OBJECTPOINT)
        rc = fn(m, o, va_arg(ap, long));
    else if ((long)o >= CURLOPTTYPE_OFF_T)
        rc = fn(m, o, va_arg(ap, curl_off_t));
    else
        rc = fn(m, o, va_arg(ap, void *));
    va_end(ap);
    return rc;
}

/* Every CURLINFO takes a pointer to where the answer goes. */
CURLcode(curl_easy_getinfo)(CURL *c, CURLINFO info, ...)
{
    CURLcode (*fn)(CURL *, CURLINFO, ...) =
        (CURLcode(*)(CURL *, CURLINFO, ...))lazylib_fn(&curl_lib, LZ_curl_easy_getinfo);
    va_list ap;
    va_start(ap, info);
    CURLcode rc = fn(c, info, va_arg(ap, void *));
    va_end(ap);
    return rc;
}

/* Nothing to clean up in a process that never loaded libcurl (a worker that spoke plain HTTP). */
void curl_global_cleanup(void)
{
    if (lazylib_loaded(&curl_lib))
        ((void (*)(void))lazylib_fn(&curl_lib, LZ_curl_global_cleanup))();
}

/* OpenSSL's TLS half (lib/http1.c's https://; the tests' TLS peers use the server side). libcrypto,
 * which it needs, is linked. */
#define SSL_FNS(X, XV, XH)                                                                         \
    X(int, SSL_accept, (SSL * a0), (a0))                                                           \
    X(int, SSL_connect, (SSL * a0), (a0))                                                          \
    X(long, SSL_CTX_ctrl, (SSL_CTX * a0, int a1, long a2, void *a3), (a0, a1, a2, a3))             \
    XV(SSL_CTX_free, (SSL_CTX * a0), (a0))                                                         \
    X(int, SSL_CTX_load_verify_file, (SSL_CTX * a0, const char *a1), (a0, a1))                     \
    X(SSL_CTX *, SSL_CTX_new, (const SSL_METHOD *a0), (a0))                                        \
    XV(SSL_CTX_set_cert_store, (SSL_CTX * a0, X509_STORE * a1), (a0, a1))                          \
    X(uint64_t, SSL_CTX_set_options, (SSL_CTX * a0, uint64_t a1), (a0, a1))                        \
    XV(SSL_CTX_set_verify, (SSL_CTX * a0, int a1, SSL_verify_cb a2), (a0, a1, a2))                 \
    X(int, SSL_CTX_use_certificate, (SSL_CTX * a0, X509 * a1), (a0, a1))                           \
    X(int, SSL_CTX_use_PrivateKey, (SSL_CTX * a0, EVP_PKEY * a1), (a0, a1))                        \
    X(long, SSL_ctrl, (SSL * a0, int a1, long a2, void *a3), (a0, a1, a2, a3))                     \
    X(SSL_SESSION *, SSL_get_session, (const SSL *a0), (a0))                                       \
    X(int, SSL_session_reused, (const SSL *a0), (a0))                                              \
    X(SSL_SESSION *, SSL_SESSION_dup, (const SSL_SESSION *a0), (a0))                               \
    XV(SSL_SESSION_free, (SSL_SESSION * a0), (a0))                                                 \
    X(int, SSL_SESSION_is_resumable, (const SSL_SESSION *a0), (a0))                                \
    X(int, SSL_set_session, (SSL * a0, SSL_SESSION * a1), (a0, a1))                                \
    XV(SSL_free, (SSL * a0), (a0))                                                                 \
    X(X509_VERIFY_PARAM *, SSL_get0_param, (SSL * a0), (a0))                                       \
    X(int, SSL_get_error, (const SSL *a0, int a1), (a0, a1))                                       \
    X(BIO *, SSL_get_rbio, (const SSL *a0), (a0))                                                  \
    X(const char *, SSL_get_servername, (const SSL *a0, const int a1), (a0, a1))                   \
    X(long, SSL_get_verify_result, (const SSL *a0), (a0))                                          \
    X(SSL *, SSL_new, (SSL_CTX * a0), (a0))                                                        \
    X(int, SSL_pending, (const SSL *a0), (a0))                                                     \
    X(int, SSL_read, (SSL * a0, void *a1, int a2), (a0, a1, a2))                                   \
    XV(SSL_set_bio, (SSL * a0, BIO * a1, BIO * a2), (a0, a1, a2))                                  \
    X(int, SSL_set_fd, (SSL * a0, int a1), (a0, a1))                                               \
    X(int, SSL_shutdown, (SSL * a0), (a0))                                                         \
    X(int, SSL_write, (SSL * a0, const void *a1, int a2), (a0, a1, a2))                            \
    X(const SSL_METHOD *, TLS_client_method, (void), ())                                           \
    X(const SSL_METHOD *, TLS_server_method, (void), ())
LZ_LIBRARY(ssl_lib, SSL_FNS, "libssl.so.3", "libssl3")
#define LZ_LIB ssl_lib
SSL_FNS(LZ_DEF, LZ_DEFV, LZ_SKIP)
#undef LZ_LIB

#define MHD_FNS(X, XV, XH)                                                                         \
    X(enum MHD_Result, MHD_add_response_header,                                                    \
      (struct MHD_Response * a0, const char *a1, const char *a2), (a0, a1, a2))                    \
    X(struct MHD_Response *, MHD_create_response_from_buffer,                                      \
      (size_t a0, void *a1, enum MHD_ResponseMemoryMode a2), (a0, a1, a2))                         \
    X(struct MHD_Response *, MHD_create_response_from_callback,                                    \
      (uint64_t a0, size_t a1, MHD_ContentReaderCallback a2, void *a3,                             \
       MHD_ContentReaderFreeCallback a4),                                                          \
      (a0, a1, a2, a3, a4))                                                                        \
    X(struct MHD_Response *, MHD_create_response_from_fd, (size_t a0, int a1), (a0, a1))           \
    XV(MHD_destroy_response, (struct MHD_Response * a0), (a0))                                     \
    XH(MHD_get_connection_info)                                                                    \
    XH(MHD_get_daemon_info)                                                                        \
    X(const char *, MHD_lookup_connection_value,                                                   \
      (struct MHD_Connection * a0, enum MHD_ValueKind a1, const char *a2), (a0, a1, a2))           \
    X(enum MHD_Result, MHD_lookup_connection_value_n,                                              \
      (struct MHD_Connection * a0, enum MHD_ValueKind a1, const char *a2, size_t a3,               \
       const char **a4, size_t *a5),                                                               \
      (a0, a1, a2, a3, a4, a5))                                                                    \
    X(enum MHD_Result, MHD_queue_response,                                                         \
      (struct MHD_Connection * a0, unsigned int a1, struct MHD_Response *a2), (a0, a1, a2))        \
    X(MHD_socket, MHD_quiesce_daemon, (struct MHD_Daemon * a0), (a0))                              \
    XV(MHD_resume_connection, (struct MHD_Connection * a0), (a0))                                  \
    XV(MHD_stop_daemon, (struct MHD_Daemon * a0), (a0))                                            \
    XV(MHD_suspend_connection, (struct MHD_Connection * a0), (a0))                                 \
    XH(MHD_start_daemon_va)
LZ_LIBRARY(mhd_lib, MHD_FNS, "libmicrohttpd.so.12", "libmicrohttpd12")
#define LZ_LIB mhd_lib
MHD_FNS(LZ_DEF, LZ_DEFV, LZ_SKIP)
#undef LZ_LIB

struct MHD_Daemon *(MHD_start_daemon)(unsigned int flags, uint16_t port,
                                      MHD_AcceptPolicyCallback apc, void *apc_cls,
                                      MHD_AccessHandlerCallback dh, void *dh_cls, ...)
{
    struct MHD_Daemon *(*fn)(unsigned int, uint16_t, MHD_AcceptPolicyCallback, void *,
                             MHD_AccessHandlerCallback, void *, va_list) =
        (struct MHD_Daemon * (*)(unsigned int, uint16_t, MHD_AcceptPolicyCallback, void *,
                                 MHD_AccessHandlerCallback, void *, va_list))
            lazylib_fn(&mhd_lib, LZ_MHD_start_daemon_va);
    va_list ap;
    va_start(ap, dh_cls);
    struct MHD_Daemon *d = fn(flags, port, apc, apc_cls, dh, dh_cls, ap);
    va_end(ap);
    return d;
}

/* The info getters' variadic arguments serve kinds of information pingvas never asks for. */
const union MHD_ConnectionInfo *(MHD_get_connection_info)(struct MHD_Connection *c,
                                                          enum MHD_ConnectionInfoType type, ...)
{
    const union MHD_ConnectionInfo *(*fn)(struct MHD_Connection *, enum MHD_ConnectionInfoType,
                                          ...) =
        (const union MHD_ConnectionInfo *(*)(struct MHD_Connection *, enum MHD_ConnectionInfoType,
                                             ...))lazylib_fn(&mhd_lib, LZ_MHD_get_connection_info);
    return fn(c, type);
}

const union MHD_DaemonInfo *(MHD_get_daemon_info)(struct MHD_Daemon *d,
                                                  enum MHD_DaemonInfoType type, ...)
{
    const union MHD_DaemonInfo *(*fn)(struct MHD_Daemon *, enum MHD_DaemonInfoType, ...) =
        (const union MHD_DaemonInfo *(*)(struct MHD_Daemon *, enum MHD_DaemonInfoType,
                                         ...))lazylib_fn(&mhd_lib, LZ_MHD_get_daemon_info);
    return fn(d, type);
}

#define SQLITE_FNS(X, XV, XH)                                                                      \
    X(int, sqlite3_bind_blob,                                                                      \
      (sqlite3_stmt * a0, int a1, const void *a2, int a3, void (*a4)(void *)),                     \
      (a0, a1, a2, a3, a4))                                                                        \
    X(int, sqlite3_bind_double, (sqlite3_stmt * a0, int a1, double a2), (a0, a1, a2))              \
    X(int, sqlite3_bind_int, (sqlite3_stmt * a0, int a1, int a2), (a0, a1, a2))                    \
    X(int, sqlite3_bind_int64, (sqlite3_stmt * a0, int a1, sqlite3_int64 a2), (a0, a1, a2))        \
    X(int, sqlite3_bind_null, (sqlite3_stmt * a0, int a1), (a0, a1))                               \
    X(int, sqlite3_bind_text,                                                                      \
      (sqlite3_stmt * a0, int a1, const char *a2, int a3, void (*a4)(void *)),                     \
      (a0, a1, a2, a3, a4))                                                                        \
    X(int, sqlite3_busy_timeout, (sqlite3 * a0, int a1), (a0, a1))                                 \
    X(int, sqlite3_changes, (sqlite3 * a0), (a0))                                                  \
    X(int, sqlite3_clear_bindings, (sqlite3_stmt * a0), (a0))                                      \
    X(int, sqlite3_close, (sqlite3 * a0), (a0))                                                    \
    X(const void *, sqlite3_column_blob, (sqlite3_stmt * a0, int a1), (a0, a1))                    \
    X(int, sqlite3_column_bytes, (sqlite3_stmt * a0, int a1), (a0, a1))                            \
    X(double, sqlite3_column_double, (sqlite3_stmt * a0, int a1), (a0, a1))                        \
    X(int, sqlite3_column_int, (sqlite3_stmt * a0, int a1), (a0, a1))                              \
    X(sqlite3_int64, sqlite3_column_int64, (sqlite3_stmt * a0, int a1), (a0, a1))                  \
    X(const unsigned char *, sqlite3_column_text, (sqlite3_stmt * a0, int a1), (a0, a1))           \
    X(int, sqlite3_column_type, (sqlite3_stmt * a0, int a1), (a0, a1))                             \
    XH(sqlite3_config)                                                                             \
    X(const char *, sqlite3_errmsg, (sqlite3 * a0), (a0))                                          \
    X(const char *, sqlite3_errstr, (int a0), (a0))                                                \
    X(int, sqlite3_exec,                                                                           \
      (sqlite3 * a0, const char *a1, int (*a2)(void *, int, char **, char **), void *a3,           \
       char **a4),                                                                                 \
      (a0, a1, a2, a3, a4))                                                                        \
    X(int, sqlite3_finalize, (sqlite3_stmt * a0), (a0))                                            \
    XV(sqlite3_free, (void *a0), (a0))                                                             \
    X(int, sqlite3_get_autocommit, (sqlite3 * a0), (a0))                                           \
    X(int, sqlite3_open, (const char *a0, sqlite3 **a1), (a0, a1))                                 \
    X(int, sqlite3_open_v2, (const char *a0, sqlite3 **a1, int a2, const char *a3),                \
      (a0, a1, a2, a3))                                                                            \
    X(int, sqlite3_prepare_v2,                                                                     \
      (sqlite3 * a0, const char *a1, int a2, sqlite3_stmt **a3, const char **a4),                  \
      (a0, a1, a2, a3, a4))                                                                        \
    X(int, sqlite3_prepare_v3,                                                                     \
      (sqlite3 * a0, const char *a1, int a2, unsigned int a3, sqlite3_stmt **a4, const char **a5), \
      (a0, a1, a2, a3, a4, a5))                                                                    \
    X(int, sqlite3_reset, (sqlite3_stmt * a0), (a0))                                               \
    X(int, sqlite3_step, (sqlite3_stmt * a0), (a0))                                                \
    X(int, sqlite3_system_errno, (sqlite3 * a0), (a0))                                             \
    XH(sqlite3_vmprintf)
LZ_LIBRARY(sqlite_lib, SQLITE_FNS, "libsqlite3.so.0", "libsqlite3-0")
#define LZ_LIB sqlite_lib
SQLITE_FNS(LZ_DEF, LZ_DEFV, LZ_SKIP)
#undef LZ_LIB

char *(sqlite3_mprintf)(const char *fmt, ...)
{
    char *(*fn)(const char *, va_list) =
        (char *(*)(const char *, va_list))lazylib_fn(&sqlite_lib, LZ_sqlite3_vmprintf);
    va_list ap;
    va_start(ap, fmt);
    char *s = fn(fmt, ap);
    va_end(ap);
    return s;
}

/* Only the options pingvas sets are forwarded: SQLITE_CONFIG_MALLOC (a pointer to the methods,
 * lib/sqlmem.c) and those that take one int (SQLITE_CONFIG_MEMSTATUS). */
int(sqlite3_config)(int op, ...)
{
    int (*fn)(int, ...) = (int (*)(int, ...))lazylib_fn(&sqlite_lib, LZ_sqlite3_config);
    va_list ap;
    va_start(ap, op);
    int rc;
    if (op == SQLITE_CONFIG_MALLOC) {
        const sqlite3_mem_methods *m = va_arg(ap, const sqlite3_mem_methods *);
        rc = fn(op, m);
    } else {
        rc = fn(op, va_arg(ap, int));
    }
    va_end(ap);
    return rc;
}

#define LWS_FNS(X, XV, XH)                                                                         \
    X(struct lws *, lws_client_connect_via_info, (const struct lws_client_connect_info *a0), (a0)) \
    XV(lws_context_destroy, (struct lws_context * a0), (a0))                                       \
    X(void *, lws_context_user, (struct lws_context * a0), (a0))                                   \
    X(struct lws_context *, lws_create_context, (const struct lws_context_creation_info *a0),      \
      (a0))                                                                                        \
    X(int, lws_frame_is_binary, (struct lws * a0), (a0))                                           \
    X(struct lws_context *, lws_get_context, (const struct lws *a0), (a0))                         \
    X(int, lws_is_final_fragment, (struct lws * a0), (a0))                                         \
    X(size_t, lws_remaining_packet_payload, (struct lws * a0), (a0))                               \
    X(int, lws_service, (struct lws_context * a0, int a1), (a0, a1))                               \
    XV(lws_set_log_level, (int a0, void (*a1)(int level, const char *line)), (a0, a1))             \
    XV(lws_sul_cancel, (lws_sorted_usec_list_t * a0), (a0))                                        \
    XV(lws_sul_schedule,                                                                           \
       (struct lws_context * a0, int a1, lws_sorted_usec_list_t *a2, sul_cb_t a3, lws_usec_t a4),  \
       (a0, a1, a2, a3, a4))
LZ_LIBRARY(lws_lib, LWS_FNS, "libwebsockets.so.17", "libwebsockets17")
#define LZ_LIB lws_lib
LWS_FNS(LZ_DEF, LZ_DEFV, LZ_SKIP)
#undef LZ_LIB

#ifdef PINGVAS_HAVE_PQ
#define PQ_FNS(X, XV, XH)                                                                          \
    XV(PQclear, (PGresult * a0), (a0))                                                             \
    X(char *, PQcmdStatus, (PGresult * a0), (a0))                                                  \
    X(char *, PQcmdTuples, (PGresult * a0), (a0))                                                  \
    X(PGconn *, PQconnectdb, (const char *a0), (a0))                                               \
    X(PGconn *, PQconnectdbParams, (const char *const *a0, const char *const *a1, int a2),         \
      (a0, a1, a2))                                                                                \
    X(PostgresPollingStatusType, PQconnectPoll, (PGconn * a0), (a0))                               \
    X(PGconn *, PQconnectStartParams, (const char *const *a0, const char *const *a1, int a2),      \
      (a0, a1, a2))                                                                                \
    XV(PQconninfoFree, (PQconninfoOption * a0), (a0))                                              \
    X(PQconninfoOption *, PQconninfoParse, (const char *a0, char **a1), (a0, a1))                  \
    X(int, PQconsumeInput, (PGconn * a0), (a0))                                                    \
    X(int, PQenterPipelineMode, (PGconn * a0), (a0))                                               \
    X(char *, PQerrorMessage, (const PGconn *a0), (a0))                                            \
    X(PGresult *, PQexec, (PGconn * a0, const char *a1), (a0, a1))                                 \
    X(int, PQexitPipelineMode, (PGconn * a0), (a0))                                                \
    XV(PQfinish, (PGconn * a0), (a0))                                                              \
    X(int, PQflush, (PGconn * a0), (a0))                                                           \
    XV(PQfreemem, (void *a0), (a0))                                                                \
    X(PGresult *, PQgetResult, (PGconn * a0), (a0))                                                \
    X(int, PQgetisnull, (const PGresult *a0, int a1, int a2), (a0, a1, a2))                        \
    X(char *, PQgetvalue, (const PGresult *a0, int a1, int a2), (a0, a1, a2))                      \
    X(int, PQisBusy, (PGconn * a0), (a0))                                                          \
    X(PGnotify *, PQnotifies, (PGconn * a0), (a0))                                                 \
    X(int, PQnfields, (const PGresult *a0), (a0))                                                  \
    X(int, PQntuples, (const PGresult *a0), (a0))                                                  \
    X(int, PQpipelineSync, (PGconn * a0), (a0))                                                    \
    X(char *, PQresultErrorField, (const PGresult *a0, int a1), (a0, a1))                          \
    X(char *, PQresultErrorMessage, (const PGresult *a0), (a0))                                    \
    X(ExecStatusType, PQresultStatus, (const PGresult *a0), (a0))                                  \
    X(int, PQsendPrepare, (PGconn * a0, const char *a1, const char *a2, int a3, const Oid *a4),    \
      (a0, a1, a2, a3, a4))                                                                        \
    X(int, PQsendQueryParams,                                                                      \
      (PGconn * a0, const char *a1, int a2, const Oid *a3, const char *const *a4, const int *a5,   \
       const int *a6, int a7),                                                                     \
      (a0, a1, a2, a3, a4, a5, a6, a7))                                                            \
    X(int, PQsendQueryPrepared,                                                                    \
      (PGconn * a0, const char *a1, int a2, const char *const *a3, const int *a4, const int *a5,   \
       int a6),                                                                                    \
      (a0, a1, a2, a3, a4, a5, a6))                                                                \
    X(PQnoticeProcessor, PQsetNoticeProcessor, (PGconn * a0, PQnoticeProcessor a1, void *a2),      \
      (a0, a1, a2))                                                                                \
    X(int, PQsetnonblocking, (PGconn * a0, int a1), (a0, a1))                                      \
    X(int, PQsocket, (const PGconn *a0), (a0))                                                     \
    X(ConnStatusType, PQstatus, (const PGconn *a0), (a0))                                          \
    X(PGTransactionStatusType, PQtransactionStatus, (const PGconn *a0), (a0))
LZ_LIBRARY(pq_lib, PQ_FNS, "libpq.so.5", "libpq5")
#define LZ_LIB pq_lib
PQ_FNS(LZ_DEF, LZ_DEFV, LZ_SKIP)
#undef LZ_LIB
#endif

#ifdef PINGVAS_HAVE_HIREDIS
#define REDIS_FNS(X, XV, XH)                                                                       \
    XV(freeReplyObject, (void *a0), (a0))                                                          \
    X(void *, redisCommandArgv, (redisContext * a0, int a1, const char **a2, const size_t *a3),    \
      (a0, a1, a2, a3))                                                                            \
    X(redisContext *, redisConnectWithTimeout, (const char *a0, int a1, const struct timeval a2),  \
      (a0, a1, a2))                                                                                \
    XV(redisFree, (redisContext * a0), (a0))                                                       \
    X(int, redisGetReply, (redisContext * a0, void **a1), (a0, a1))                                \
    X(int, redisGetReplyFromReader, (redisContext * a0, void **a1), (a0, a1))                      \
    X(int, redisSetTimeout, (redisContext * a0, const struct timeval a1), (a0, a1))
LZ_LIBRARY(redis_lib, REDIS_FNS, "libhiredis.so.0.14", "libhiredis0.14")
#define LZ_LIB redis_lib
REDIS_FNS(LZ_DEF, LZ_DEFV, LZ_SKIP)
#undef LZ_LIB
#endif
