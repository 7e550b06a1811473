/*
 * pingpong.c - what a wake-up costs on this machine: two processes pass one byte back and
 * forth over two pipes, N round trips, each blocking in read(2) until the other writes.  With
 * the two on different CPUs every round trip wakes an idle CPU twice, as one request at one
 * keep-alive connection does (the server's CPU for the request, the client's for the answer);
 * on one CPU it is two context switches and no idle CPU.  The suite prints both in its
 * header (bench/README.md, "Where each run's time went").
 *
 *   pingpong CPU-A CPU-B [ROUNDS]    prints "us_per_round_trip=X"
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void pin(int cpu)
{
    cpu_set_t set;

    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        perror("sched_setaffinity");
        exit(1);
    }
}

static void bounce(int in, int out, long rounds, int first)
{
    char b = 'x';

    for (long i = 0; i < rounds; i++) {
        if (first && write(out, &b, 1) != 1) {
            exit(1);
        }
        if (read(in, &b, 1) != 1) {
            exit(1);
        }
        if (!first && write(out, &b, 1) != 1) {
            exit(1);
        }
    }
}

int main(int argc, char **argv)
{
    int ab[2], ba[2], st;
    long rounds = argc > 3 ? atol(argv[3]) : 20000;
    struct timespec t0, t1;
    pid_t p;

    if (argc < 3 || rounds <= 0) {
        fprintf(stderr, "usage: pingpong CPU-A CPU-B [ROUNDS]\n");
        return 2;
    }
    if (pipe(ab) != 0 || pipe(ba) != 0) {
        perror("pipe");
        return 1;
    }
    p = fork();
    if (p < 0) {
        perror("fork");
        return 1;
    }
    if (p == 0) {
        pin(atoi(argv[2]));
        bounce(ab[0], ba[1], rounds + 100, 0);
        _exit(0);
    }
    pin(atoi(argv[1]));
    bounce(ba[0], ab[1], 100, 1); /* warm-up: both sides running, caches filled */
    clock_gettime(CLOCK_MONOTONIC, &t0);
    bounce(ba[0], ab[1], rounds, 1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    if (waitpid(p, &st, 0) != p || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "pingpong: the other side failed\n");
        return 1;
    }
    printf("us_per_round_trip=%.2f\n",
           ((double)(t1.tv_sec - t0.tv_sec) * 1e6 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e3) /
               (double)rounds);
    return 0;
}
