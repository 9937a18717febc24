/* t_pg.h: a database of a test's own on the PostgreSQL server named by PINGVAS_TEST_PG_URL (the
 * "admin" URL below): statements run on a connection of their own, the URL of another database
 * of that server, a database made and dropped. Include where PINGVAS_HAVE_PQ; links libpq and
 * libcurl (its URL parser), as the tests do through pingvas_core. */
#ifndef PINGVAS_T_PG_H
#define PINGVAS_T_PG_H

#include <curl/curl.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>

/* Runs sql on url (a connection of its own); returns the first column of the first row as an
 * integer (0 when there is none, or for a command), or -1 on failure (said on stderr). */
static inline long long t_pg_exec(const char *url, const char *sql)
{
    long long v = -1;
    PGconn *c = PQconnectdb(url);
    PGresult *r = PQstatus(c) == CONNECTION_OK ? PQexec(c, sql) : NULL;
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_TUPLES_OK)
        v = PQntuples(r) > 0 ? atoll(PQgetvalue(r, 0, 0)) : 0;
    else if (st == PGRES_COMMAND_OK)
        v = 0;
    else
        fprintf(stderr, "postgresql: %s: %s", sql, r ? PQresultErrorMessage(r) : PQerrorMessage(c));
    PQclear(r);
    PQfinish(c);
    return v;
}

/* url with its database replaced by db, into out (n bytes). 0 or -1. */
static inline int t_pg_url(const char *url, const char *db, char *out, size_t n)
{
    CURLU *u = curl_url();
    char path[80], *s = NULL;
    snprintf(path, sizeof path, "/%s", db);
    int ok = u && curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK &&
             curl_url_set(u, CURLUPART_PATH, path, 0) == CURLUE_OK &&
             curl_url_get(u, CURLUPART_URL, &s, 0) == CURLUE_OK;
    if (ok)
        snprintf(out, n, "%s", s);
    curl_free(s);
    curl_url_cleanup(u);
    return ok ? 0 : -1;
}

/* A new, empty database db on admin's server; its URL into url (n bytes). 0 or -1. */
static inline int t_pg_create(const char *admin, const char *db, char *url, size_t n)
{
    char sql[128];
    snprintf(sql, sizeof sql, "CREATE DATABASE \"%s\"", db);
    return t_pg_url(admin, db, url, n) == 0 && t_pg_exec(admin, sql) == 0 ? 0 : -1;
}

/* Drops database db of admin's server (its sessions ended first), if it exists. 0 or -1. */
static inline int t_pg_drop(const char *admin, const char *db)
{
    char sql[128];
    snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS \"%s\" WITH (FORCE)", db);
    return t_pg_exec(admin, sql) == 0 ? 0 : -1;
}

#endif
