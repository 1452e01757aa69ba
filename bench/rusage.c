/* bench-rusage: runs a command and reports its own resource usage.
 *
 *   bench-rusage OUTFILE CMD [ARG...]
 *
 * Forks, execs CMD, forwards SIGTERM/SIGINT/SIGHUP to it, reaps it with wait4
 * and writes one line to OUTFILE:
 *
 *   pid=N status=S utime_us=U stime_us=T maxrss_kb=M
 *
 * status is the exit code, or 128+signal. Exits with the same status.
 *
 * Why not let the benchmark driver (Python) wait4 the command itself: Python
 * starts children with vfork, and on exec Linux carries the parent's RSS
 * high-water mark into the child's ru_maxrss, so every child would "peak" at
 * the driver's own size. Forked from this small process, the command's
 * ru_maxrss is its own. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static volatile sig_atomic_t child_pid;

static void forward(int sig) {
    if (child_pid > 0) kill((pid_t)child_pid, sig);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s OUTFILE CMD [ARG...]\n", argv[0]);
        return 2;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = forward;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    pid_t pid = fork();
    if (pid < 0) {
        perror("bench-rusage: fork");
        return 127;
    }
    if (pid == 0) {
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        execvp(argv[2], argv + 2);
        fprintf(stderr, "bench-rusage: exec %s: %s\n", argv[2], strerror(errno));
        _exit(127);
    }
    child_pid = pid;

    int wstatus = 0;
    struct rusage ru;
    pid_t r;
    do
        r = wait4(pid, &wstatus, 0, &ru);
    while (r < 0 && errno == EINTR);
    if (r < 0) {
        perror("bench-rusage: wait4");
        return 127;
    }
    int status = WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : 128 + WTERMSIG(wstatus);

    FILE *f = fopen(argv[1], "w");
    if (!f) {
        fprintf(stderr, "bench-rusage: %s: %s\n", argv[1], strerror(errno));
        return 127;
    }
    fprintf(f, "pid=%d status=%d utime_us=%lld stime_us=%lld maxrss_kb=%ld\n", (int)pid, status,
            (long long)ru.ru_utime.tv_sec * 1000000 + ru.ru_utime.tv_usec,
            (long long)ru.ru_stime.tv_sec * 1000000 + ru.ru_stime.tv_usec, ru.ru_maxrss);
    if (fclose(f) != 0) {
        fprintf(stderr, "bench-rusage: %s: %s\n", argv[1], strerror(errno));
        return 127;
    }
    return status;
}
