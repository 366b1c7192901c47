package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"syscall"
	"time"

	"github.com/moatsandbox/moat/confine"
	"github.com/moatsandbox/moat/internal/prefault"
	"github.com/moatsandbox/moat/sidecar"
	"github.com/moatsandbox/moat/sidecar/control"
)

// dropPrivileges leaves the sidecar, once every socket is open, running as
// cfg.User under no_new_privs and moat's seccomp filter, with three
// capabilities: CAP_SYS_PTRACE (ptrace access to the sandbox's processes:
// /proc/PID/exe, ns/net), CAP_DAC_READ_SEARCH (their /proc/PID/fd
// directories are mode 0500 for their own user, whoever that is) and,
// when the sandbox has an NFQUEUE, CAP_NET_ADMIN (the kernel checks it on
// every message sent to nfnetlink, so each verdict on a queued SYN needs
// it; the seccomp filter still refuses new netlink sockets other than
// NETLINK_ROUTE). The decision log's directory becomes the user's, so
// rotation still works. User 0 keeps root (tests, debugging).
func dropPrivileges(cfg *control.Config) error {
	if cfg.User == 0 {
		return nil
	}
	err := filepath.WalkDir(cfg.LogDir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, int(cfg.User), int(cfg.Group))
	})
	if err != nil {
		return fmt.Errorf("hand the decision log to uid %d: %w", cfg.User, err)
	}
	keep := []string{"CAP_DAC_READ_SEARCH", "CAP_SYS_PTRACE"}
	if cfg.NFQueue != 0 {
		keep = append(keep, "CAP_NET_ADMIN")
	}
	return confine.Harden(confine.Identity{UID: cfg.User, GID: cfg.Group},
		&confine.Capabilities{Bounding: keep, Effective: keep, Permitted: keep})
}

// reclaimDelay is how long after readiness the sidecar hands back the
// memory its start used: long enough for the container's start to be over.
const reclaimDelay = time.Second

// reclaimStartMemory hands back what only the start used.
func reclaimStartMemory(logger *slog.Logger) {
	// Compiling the policy left garbage as large as the index it built.
	debug.FreeOSMemory()
	// The code only the start ran (OPA's package initialisation, the
	// policy compile) leaves the RSS too: about 14 MiB of file pages
	// with a 10,000-endpoint policy, as much as the heap.
	if err := prefault.Drop(); err != nil {
		logger.Warn("sidecar memory", "err", err)
	}
}

// readyFD is the pipe `moat create` waits on: the sidecar writes "ok\n"
// when every listener is bound, or one line of error and exits.
const readyFD = 3

// serve runs the sidecar of one sandbox until SIGTERM or SIGINT.
func serve(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("moat-sidecar serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cfgPath := fs.String("config", "", "the sidecar configuration (written by moat create)")
	notify := fs.Bool("ready-fd", false, "report readiness on fd 3")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	// One P. A sidecar serves one sandbox, and its work is short
	// handlers between system calls: with more Ps, idle ones spin and
	// threads wake each other for every connection. On the 2-vCPU test VM
	// one P cut the sidecar's CPU time per tunnel from about 990 to 570 us
	// with bulk throughput unchanged (bench/network). Its start too: it
	// runs beside the container's start, on the same CPUs, and is ready
	// before that needs it; with one P it leaves the other CPUs to the
	// container (full-sandbox start 147 to 138 ms, bench/start).
	if os.Getenv("GOMAXPROCS") == "" {
		runtime.GOMAXPROCS(1)
	}
	var ready *os.File
	if *notify {
		ready = os.NewFile(readyFD, "ready")
	}
	report := func(msg string) {
		if ready != nil {
			_, _ = ready.WriteString(msg + "\n")
			_ = ready.Close()
			ready = nil
		}
	}
	logger := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	cfg, err := control.ReadConfig(*cfgPath)
	if err != nil {
		report(err.Error())
		fmt.Fprintln(stderr, "moat-sidecar:", err)
		return 1
	}
	logger = logger.With("sandbox", cfg.Sandbox)
	// A sidecar per sandbox: keep its heap close to what it uses (the
	// design's budget is 30 MiB with a 10,000-endpoint policy).
	debug.SetGCPercent(50)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	sc, err := sidecar.Start(ctx, cfg, logger)
	if err != nil {
		report(err.Error())
		logger.Error("sidecar failed to start", "err", err)
		return 1
	}
	if err := dropPrivileges(cfg); err != nil {
		report("drop privileges: " + err.Error())
		logger.Error("sidecar failed to drop its privileges", "err", err)
		return 1
	}
	logger.Info("sidecar ready", "proxy", cfg.Proxy, "pid", os.Getpid(), "uid", os.Getuid())
	report("ok")
	// What the long life of a sidecar needs, and its start does not,
	// waits until the container's start, which the sidecar's readiness
	// lets go on and which runs on the same CPUs, is behind it.
	reclaim := time.AfterFunc(reclaimDelay, func() { reclaimStartMemory(logger) })
	defer reclaim.Stop()
	<-ctx.Done()
	logger.Info("sidecar stopping")
	if err := sc.Close(); err != nil {
		logger.Warn("sidecar close", "err", err)
	}
	return 0
}
