#include "lib/httpc.h"

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lib/http1.h"

struct httpc {
    http1_conn_t plain; /* http:// and https:// (lib/http1.h) */
    CURL *curl;         /* what http1 does not take (a proxy, userinfo); made on first need */
};

httpc_t *httpc_new(void)
{
    httpc_t *h = calloc(1, sizeof *h);
    if (h)
        h->plain.fd = -1;
    return h;
}

void httpc_free(httpc_t *h)
{
    if (!h)
        return;
    http1_close(&h->plain);
    if (h->curl)
        curl_easy_cleanup(h->curl);
    free(h);
}

typedef struct sink {
    httpc_resp_t *r;
    size_t cap;
    int too_big;
} sink_t;

static size_t on_data(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    sink_t *k = userdata;
    httpc_resp_t *r = k->r;
    size_t n = size * nmemb;
    if (n > k->cap || r->len > k->cap - n) {
        k->too_big = 1;
        return 0; /* over the cap: abort the transfer */
    }
    char *nb = realloc(r->body, r->len + n + 1);
    if (!nb)
        return 0;
    r->body = nb;
    memcpy(r->body + r->len, ptr, n);
    r->len += n;
    r->body[r->len] = '\0';
    return n;
}

static int on_progress(void *p, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    atomic_int *flag = p;
    return flag && atomic_load(flag) ? 1 : 0;
}

/* req through libcurl on c. */
static int curl_do(CURL *c, const httpc_req_t *req, httpc_resp_t *out)
{
    curl_easy_reset(c);
    struct curl_slist *hdrs = NULL;
    char auth[4200];
    if (req->bearer) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", req->bearer);
        hdrs = curl_slist_append(hdrs, auth);
    }
    if (req->extra_header)
        hdrs = curl_slist_append(hdrs, req->extra_header);
    for (const char *const *x = req->headers; x && *x; x++)
        hdrs = curl_slist_append(hdrs, *x);
    char ct[128];
    if (req->body) {
        snprintf(ct, sizeof ct, "Content-Type: %s",
                 req->content_type ? req->content_type : "application/json");
        hdrs = curl_slist_append(hdrs, ct);
    }
    hdrs = curl_slist_append(hdrs, "Expect:");
    curl_easy_setopt(c, CURLOPT_URL, req->url);
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, req->method);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, req->timeout_ms > 0 ? req->timeout_ms : 30000L);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    sink_t sink = {.r = out, .cap = req->max_response ? req->max_response : HTTPC_RESPONSE_MAX};
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_data);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &sink);
    if (req->body) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, req->body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
    } else if (strcmp(req->method, "POST") == 0 || strcmp(req->method, "PUT") == 0) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, "");
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)0);
    }
    if (req->ca_file)
        curl_easy_setopt(c, CURLOPT_CAINFO, req->ca_file);
    struct curl_slist *resolve = req->resolve ? curl_slist_append(NULL, req->resolve) : NULL;
    if (resolve)
        curl_easy_setopt(c, CURLOPT_RESOLVE, resolve);
    if (req->protocols)
        curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, req->protocols);
    if (req->abort_flag) {
        curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
        curl_easy_setopt(c, CURLOPT_XFERINFOFUNCTION, on_progress);
        curl_easy_setopt(c, CURLOPT_XFERINFODATA, req->abort_flag);
    }
    CURLcode rc = curl_easy_perform(c);
    curl_slist_free_all(hdrs);
    curl_slist_free_all(resolve);
    if (rc != CURLE_OK) {
        if (sink.too_big)
            snprintf(out->error, sizeof out->error, "response larger than %zu bytes", sink.cap);
        else
            snprintf(out->error, sizeof out->error, "%s", curl_easy_strerror(rc));
        out->status = 0;
        return -1;
    }
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &out->status);
    return 0;
}

int httpc_do(httpc_t *h, const httpc_req_t *req, httpc_resp_t *out)
{
    memset(out, 0, sizeof *out);
    if (h && http1_takes(req))
        return http1_do(&h->plain, req, out);
    if (h && !h->curl)
        h->curl = curl_easy_init();
    if (!h || !h->curl) {
        snprintf(out->error, sizeof out->error, "out of memory (no HTTP handle)");
        return -1;
    }
    return curl_do(h->curl, req, out);
}

void httpc_resp_free(httpc_resp_t *r)
{
    free(r->body);
    r->body = NULL;
    r->len = 0;
}
