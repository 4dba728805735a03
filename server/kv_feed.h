/* kv_feed.h - the browser view's endpoints (internal to server/): the live KV feed
 * (kv_feed.c) and the embedded page plus the policy listing (ui.c). Loop thread only. */
#ifndef KVSERVE_KV_FEED_H
#define KVSERVE_KV_FEED_H

#include "api_server.h"

/* GET /v1/kv/stream?seq=ID|tag=TAG[&interval_ms=N]: SSE frames of one sequence's cache. */
void kv_feed_handle(api_server *a, http_request *req);
/* GET / and /ui: the single-page view embedded at build time. */
void ui_page_handle(api_server *a, http_request *req);
/* GET /v1/kv/policies: every policy with its parameters (type, default, range, choices). */
void ui_policies_handle(api_server *a, http_request *req);

#endif
