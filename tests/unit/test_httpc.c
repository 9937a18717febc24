/* test_httpc.c: the HTTP client helper when its handle could not be made (httpc_new failed:
 * out of memory): an error answer, never a crash (the worker and its monitor thread rely on it). */
#include "lib/httpc.h"
#include "t.h"

static void test_no_handle_is_an_error(void)
{
    httpc_req_t req = {
        .method = "POST", .url = "http://127.0.0.1:9/x", .body = "{}", .body_len = 2};
    httpc_resp_t resp;
    CHECK_INT(httpc_do(NULL, &req, &resp), -1);
    CHECK_INT(resp.status, 0);
    CHECK(strstr(resp.error, "out of memory") != NULL);
    httpc_resp_free(&resp);
}

#define TESTS(X) X(test_no_handle_is_an_error)
#include "t_main.h"
