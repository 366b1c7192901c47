package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/moatsandbox/moat/sidecar"
	"github.com/moatsandbox/moat/sidecar/control"
)

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
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	sc, err := sidecar.Start(ctx, cfg, logger)
	if err != nil {
		report(err.Error())
		logger.Error("sidecar failed to start", "err", err)
		return 1
	}
	logger.Info("sidecar ready", "proxy", cfg.Proxy, "pid", os.Getpid())
	report("ok")
	<-ctx.Done()
	logger.Info("sidecar stopping")
	if err := sc.Close(); err != nil {
		logger.Warn("sidecar close", "err", err)
	}
	return 0
}
