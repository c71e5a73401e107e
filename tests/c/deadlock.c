/*
 * A textbook lock-order deadlock, for sentinel's daemon tests.
 *
 * Thread A locks m1 then m2; thread B locks m2 then m1. A barrier makes sure
 * both hold their first mutex before either asks for its second, so the
 * deadlock is certain. Default (PTHREAD_MUTEX_NORMAL) glibc mutexes, whose
 * owner tid sentinel reads from the lock word.
 *
 * Protocol (see tests/src/workload.rs): prints "ready", waits for a "go"
 * line on stdin (exits 0 if stdin closes first), starts the threads and,
 * once both hold their first mutex, prints "tids a=<tid A> b=<tid B>". The
 * main thread then blocks in pthread_join for good; the test kills it.
 *
 * Built by the harness with: cc -O1 -g -fno-omit-frame-pointer -pthread
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

static pthread_mutex_t m1 = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t m2 = PTHREAD_MUTEX_INITIALIZER;
/* A, B and main: passed once both threads hold their first mutex. */
static pthread_barrier_t both_hold_first;
static pid_t tid_a, tid_b;

static void die(const char *what, int err)
{
	if (err)
		printf("error: %s: %s\n", what, strerror(err));
	else
		printf("error: %s\n", what);
	fflush(stdout);
	exit(2);
}

static pid_t current_tid(void)
{
	return (pid_t)syscall(SYS_gettid);
}

/* Separate, non-inlined frames so a stack names who waits for what. */
static __attribute__((noinline)) void take(pthread_mutex_t *m)
{
	int err = pthread_mutex_lock(m);
	if (err)
		die("pthread_mutex_lock", err);
}

static __attribute__((noinline)) void *thread_a(void *arg)
{
	(void)arg;
	tid_a = current_tid();
	take(&m1);
	pthread_barrier_wait(&both_hold_first);
	take(&m2); /* never returns: B holds m2 and waits for m1 */
	die("thread A got both mutexes", 0);
	return NULL;
}

static __attribute__((noinline)) void *thread_b(void *arg)
{
	(void)arg;
	tid_b = current_tid();
	take(&m2);
	pthread_barrier_wait(&both_hold_first);
	take(&m1); /* never returns: A holds m1 and waits for m2 */
	die("thread B got both mutexes", 0);
	return NULL;
}

static void wait_go(void)
{
	char line[256];
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\r\n")] = '\0';
		if (strcmp(line, "go") == 0)
			return;
	}
	exit(0); /* stdin closed: the test is gone */
}

int main(void)
{
	pthread_t a, b;
	int err;

	printf("ready\n");
	fflush(stdout);
	wait_go();

	err = pthread_barrier_init(&both_hold_first, NULL, 3);
	if (err)
		die("pthread_barrier_init", err);
	err = pthread_create(&a, NULL, thread_a, NULL);
	if (err)
		die("pthread_create A", err);
	err = pthread_create(&b, NULL, thread_b, NULL);
	if (err)
		die("pthread_create B", err);
	pthread_barrier_wait(&both_hold_first);
	printf("tids a=%d b=%d\n", (int)tid_a, (int)tid_b);
	fflush(stdout);
	pthread_join(a, NULL); /* never returns */
	return 0;
}
