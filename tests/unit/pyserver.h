/*
 * Shared by the unit tests that talk to a small python3 HTTP server of their
 * own (httpc_server.py, awscreds_server.py): starts it, reads the port it
 * prints, and stops it by closing its stdin.  Header-only: each test file
 * includes it once.
 */
#ifndef CONNECTD_TEST_PYSERVER_H
#define CONNECTD_TEST_PYSERVER_H

#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

typedef struct peer {
    pid_t pid;
    int stdin_fd; /* closing it stops the server */
    int port;
} peer;

/* Starts python3 on tests/unit/<script> with one optional argument. */
static inline void peer_start_script(peer *s, const char *script, const char *arg) {
    int in[2], out[2];
    cr_assert_eq(pipe2(in, O_CLOEXEC), 0);
    cr_assert_eq(pipe2(out, O_CLOEXEC), 0);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, in[0], 0);
    posix_spawn_file_actions_adddup2(&fa, out[1], 1);
    char path[512];
    snprintf(path, sizeof(path), "%s/tests/unit/%s", CONNECTD_SOURCE_DIR, script);
    char *argv[] = {"python3", path, (char *)arg, NULL};
    int r = posix_spawnp(&s->pid, "python3", &fa, NULL, argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    cr_assert_eq(r, 0, "posix_spawnp python3: %s", strerror(r));
    close(in[0]);
    close(out[1]);
    s->stdin_fd = in[1];
    FILE *f = fdopen(out[0], "r");
    cr_assert_not_null(f);
    char line[64] = {0};
    cr_assert_not_null(fgets(line, sizeof(line), f), "server printed no port");
    fclose(f);
    s->port = atoi(line);
    cr_assert_gt(s->port, 0);
}

/* Stops a started server; a peer never started (pid 0) is ignored. */
static inline void peer_stop(peer *s) {
    if (!s->pid) return;
    close(s->stdin_fd);
    kill(s->pid, SIGTERM);
    waitpid(s->pid, NULL, 0);
    s->pid = 0;
}

#endif
