// Command start measures container start cost: `moat run` against `runc
// run` of /bin/true on the same busybox bundle, interleaved, and prints the
// medians, their spread and the ratio; then `exec true` into a running
// container and `delete --force` of a created container, moat's (sandbox
// on) against runc's. moat runs three ways: with the sandbox off, with the
// sandbox on and the embedded default policy (no network section: no
// network work), and with the full sandbox (a policy with a network
// section, so every run makes the inner netns, the veth, the nftables rules
// and the sidecar). It needs root. `make bench` runs it.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"time"

	"github.com/moatsandbox/moat/test/fixtures"
	"golang.org/x/sys/unix"
)

func main() {
	moat := flag.String("moat", "bin/moat", "moat binary (as make build builds it)")
	runc := flag.String("runc", "runc", "runc binary")
	n := flag.Int("n", 30, "runs per runtime")
	flag.Parse()
	if err := run(*moat, *runc, *n); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(moat, runc string, n int) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (it runs containers)")
	}
	runcPath, err := exec.LookPath(runc)
	if err != nil {
		return err
	}
	if moat, err = filepath.Abs(moat); err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "moat-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bundle, err := fixtures.Bundle(filepath.Join(dir, "bundle"), "/bin/true")
	if err != nil {
		return err
	}
	cfg, err := fixtures.SandboxOffConfig(dir)
	if err != nil {
		return err
	}
	sbCfg := filepath.Join(dir, "sandbox.yaml")
	if err := os.WriteFile(sbCfg, []byte("sandbox: on\nstate_dir: "+filepath.Join(dir, "state")+"\n"), 0o644); err != nil {
		return err
	}
	cmds := map[string]func(id string) *exec.Cmd{
		"runc run": func(id string) *exec.Cmd {
			return exec.Command(runcPath, "--root", filepath.Join(dir, "runc-root"), "run", "--bundle", bundle, id)
		},
		"moat run (sandbox off)": func(id string) *exec.Cmd {
			return exec.Command(moat, "--root", filepath.Join(dir, "moat-root"), "--config", cfg, "run", "--bundle", bundle, id)
		},
		// The sandbox with the embedded default policy: no network section,
		// so moat-init applies Landlock, seccomp and the identity only.
		"moat run (sandbox on)": func(id string) *exec.Cmd {
			return exec.Command(moat, "--root", filepath.Join(dir, "moat-root"), "--config", sbCfg, "run", "--bundle", bundle, id)
		},
	}
	// The full sandbox: the embedded default policy plus a network
	// section of one endpoint.
	fullCfg, err := fullSandboxConfig(dir)
	if err != nil {
		return err
	}
	cmds["moat run (full sandbox)"] = func(id string) *exec.Cmd {
		return exec.Command(moat, "--root", filepath.Join(dir, "moat-root"), "--config", fullCfg, "run", "--bundle", bundle, id)
	}
	// Whatever a failed run left behind goes, network and sidecar included.
	defer func() {
		// The full sandbox's configuration first: it knows its network state.
		for _, cfg := range []string{fullCfg, sbCfg, cfg} {
			ents, _ := os.ReadDir(filepath.Join(dir, "moat-root"))
			for _, ent := range ents {
				_ = exec.Command(moat, "--root", filepath.Join(dir, "moat-root"), "--config", cfg, "delete", "--force", ent.Name()).Run()
			}
		}
	}()
	// Every binary starts from the same page cache state (see uncache).
	bins := []string{runcPath, moat}
	for _, b := range []string{"moat-init", "moat-sidecar"} {
		bins = append(bins, filepath.Join(filepath.Dir(moat), b))
	}
	if err := uncache(bins...); err != nil {
		return err
	}
	names := []string{"runc run", "moat run (sandbox off)", "moat run (sandbox on)", "moat run (full sandbox)"}
	times := map[string][]time.Duration{}
	// One warm-up run each, then n interleaved runs, rotating which
	// runtime goes first so drift on a noisy machine hits all alike.
	for i := -1; i < n; i++ {
		k := (i + len(names)) % len(names)
		order := append(slices.Clone(names[k:]), names[:k]...)
		for _, name := range order {
			cmd := cmds[name](fmt.Sprintf("bench-%d-%d", os.Getpid(), len(times[name])+i*10+100))
			start := time.Now()
			if out, err := cmd.CombinedOutput(); err != nil {
				return fmt.Errorf("%s: %v\n%s", name, err, out)
			}
			if i >= 0 {
				times[name] = append(times[name], time.Since(start))
			}
		}
	}
	base := median(times[names[0]])
	fmt.Printf("Container start, /bin/true on a busybox bundle, %d interleaved runs each\n", n)
	fmt.Printf("%-25s %10s %10s %10s %8s\n", "", "median", "p10", "p90", "ratio")
	for _, name := range names {
		d := times[name]
		fmt.Printf("%-25s %10s %10s %10s %7.2fx\n", name, ms(median(d)), ms(pct(d, 10)), ms(pct(d, 90)), float64(median(d))/float64(base))
	}
	// Spread of each ratio: the p10..p90 of run-by-run ratios.
	for _, name := range names[1:] {
		var ratios []float64
		for i := range times[names[0]] {
			ratios = append(ratios, float64(times[name][i])/float64(times[names[0]][i]))
		}
		slices.Sort(ratios)
		fmt.Printf("pairwise ratio %s / runc: median %.2fx, p10 %.2fx, p90 %.2fx\n", name,
			ratios[len(ratios)/2], ratios[len(ratios)*10/100], ratios[len(ratios)*90/100])
	}
	if ents, _ := os.ReadDir(filepath.Join(dir, "full-state", "networks")); len(ents) > 0 {
		return errors.New("full sandbox: network state left behind after the runs")
	}
	if err := execLatency(dir, moat, runcPath, sbCfg, n); err != nil {
		return err
	}
	return deleteLatency(dir, bundle, moat, runcPath, sbCfg, n)
}

// runtimeCmd runs one runtime's commands.
type runtimeCmd struct {
	name string
	cmd  func(args ...string) *exec.Cmd
}

// runcAndMoat are runc and moat with the sandbox on (sbCfg), with the
// roots of the start runs, named "runc OP" and "moat OP".
func runcAndMoat(dir, moat, runcPath, sbCfg, op string) []runtimeCmd {
	runcRoot, moatRoot := filepath.Join(dir, "runc-root"), filepath.Join(dir, "moat-root")
	return []runtimeCmd{
		{"runc " + op, func(args ...string) *exec.Cmd {
			return exec.Command(runcPath, append([]string{"--root", runcRoot}, args...)...)
		}},
		{"moat " + op + " (sandbox on)", func(args ...string) *exec.Cmd {
			return exec.Command(moat, append([]string{"--root", moatRoot, "--config", sbCfg}, args...)...)
		}},
	}
}

// timeEach times op for each runtime n times after one warm-up round,
// interleaved with the order rotated every round, and prints title and
// each runtime's median, p10, p90 and ratio to the first. op(j, round)
// returns the time of runtime j's operation in that round.
func timeEach(title string, runtimes []runtimeCmd, n int, op func(j, round int) (time.Duration, error)) error {
	times := make([][]time.Duration, len(runtimes))
	for i := -1; i < n; i++ {
		for k := range runtimes {
			j := (k + i + 1) % len(runtimes)
			d, err := op(j, i+1)
			if err != nil {
				return fmt.Errorf("%s: %w", runtimes[j].name, err)
			}
			if i >= 0 {
				times[j] = append(times[j], d)
			}
		}
	}
	fmt.Printf("\n%s, %d interleaved runs each\n", title, n)
	for k, rt := range runtimes {
		fmt.Printf("%-33s %10s %10s %10s %7.2fx\n", rt.name, ms(median(times[k])), ms(pct(times[k], 10)), ms(pct(times[k], 90)),
			float64(median(times[k]))/float64(median(times[0])))
	}
	return nil
}

// timed runs cmd and returns how long it took, with its output on error.
func timed(cmd *exec.Cmd) (time.Duration, error) {
	start := time.Now()
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("%v\n%s", err, out)
	}
	return time.Since(start), nil
}

// execLatency times `exec true` into a running container: runc's, and
// moat's with the sandbox on (the process passes through moat-init).
func execLatency(dir, moat, runcPath, sbCfg string, n int) error {
	bundle, err := fixtures.Bundle(filepath.Join(dir, "sleeper"), "sleep", "600")
	if err != nil {
		return err
	}
	runtimes := runcAndMoat(dir, moat, runcPath, sbCfg, "exec")
	// One id per runtime: the ids name the containers' cgroups.
	id := func(k int) string { return fmt.Sprintf("bench-exec-%d-%d", os.Getpid(), k) }
	for k, rt := range runtimes {
		name := id(k)
		// The container keeps run's stdio: a file, not a pipe run would
		// wait on.
		errFile, err := os.CreateTemp(dir, "run-stderr-")
		if err != nil {
			return err
		}
		defer errFile.Close()
		run := rt.cmd("run", "-d", "--bundle", bundle, name)
		run.Stderr = errFile
		if err := run.Run(); err != nil {
			out, _ := os.ReadFile(errFile.Name())
			return fmt.Errorf("%s: run -d: %v\n%s", rt.name, err, out)
		}
		defer rt.cmd("delete", "--force", name).Run() //nolint:errcheck
	}
	return timeEach("exec true into a running container", runtimes, n, func(j, _ int) (time.Duration, error) {
		return timed(runtimes[j].cmd("exec", id(j), "true"))
	})
}

// deleteLatency times `delete --force` of a created container (what
// `docker rm -f` and an engine's cleanup of an unstarted task run):
// runc's, and moat's with the sandbox on.
func deleteLatency(dir, bundle, moat, runcPath, sbCfg string, n int) error {
	runtimes := runcAndMoat(dir, moat, runcPath, sbCfg, "delete --force")
	return timeEach("delete --force of a created container", runtimes, n, func(j, round int) (time.Duration, error) {
		id := fmt.Sprintf("bench-delete-%d-%d-%d", os.Getpid(), j, round)
		// The created container keeps create's stdio: no pipe.
		if err := runtimes[j].cmd("create", "--bundle", bundle, id).Run(); err != nil {
			return 0, fmt.Errorf("create: %w", err)
		}
		return timed(runtimes[j].cmd("delete", "--force", id))
	})
}

// fullSandboxConfig writes an admin configuration whose default policy is
// the embedded one plus a network section (one endpoint), with its state
// and logs in dir, and returns its path.
func fullSandboxConfig(dir string) (string, error) {
	pol := filepath.Join(dir, "full-policy.yaml")
	if err := os.WriteFile(pol, []byte(`version: 1
filesystem_policy:
  include_workdir: true
landlock:
  compatibility: best_effort
network_policies:
  bench:
    endpoints:
      - host: example.com
        port: 443
    binaries:
      - path: /usr/bin/curl
`), 0o644); err != nil {
		return "", err
	}
	cfg := filepath.Join(dir, "full-sandbox.yaml")
	body := fmt.Sprintf("sandbox: on\nstate_dir: %s\nlog_dir: %s\ndefault_policy: %s\n",
		filepath.Join(dir, "full-state"), filepath.Join(dir, "full-logs"), pol)
	return cfg, os.WriteFile(cfg, []byte(body), 0o644)
}

func median(d []time.Duration) time.Duration { return pct(d, 50) }

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[len(s)*p/100]
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }

// uncache drops the files' pages from the page cache, so that the warm-up
// runs read them back the way an installed binary is read. A binary the
// linker has just written keeps the pages of that write, which on the test
// VM are mapped with about a quarter fewer page faults at each exec
// (`moat --version`: 299 against 402): without this, a fresh `make build`
// flattered moat against the long-installed runc by several percent.
func uncache(paths ...string) error {
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		// Dirty pages stay cached: write them back first.
		err = f.Sync()
		if err == nil {
			err = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED)
		}
		f.Close()
		if err != nil {
			return fmt.Errorf("drop %s from the page cache: %w", p, err)
		}
	}
	return nil
}
