package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/moatsandbox/moat/test/fixtures"
)

// clientInRootfs is where the client binary lives in the container; the
// policies name it.
const clientInRootfs = "/usr/bin/netbench"

// moatEnv is one admin configuration (its own state and log directories)
// and the containers started under it.
type moatEnv struct {
	bin, root, config, stateDir, tmp string
	ids                              []string
}

// newMoatEnv writes an admin configuration with the sandbox on and
// policyYAML as the default policy, under dir/name.
func newMoatEnv(bin, root, dir, name, policyYAML string) (*moatEnv, error) {
	base := filepath.Join(dir, name)
	if err := os.MkdirAll(base, 0o755); err != nil {
		return nil, err
	}
	pol := filepath.Join(base, "policy.yaml")
	if err := os.WriteFile(pol, []byte(policyYAML), 0o644); err != nil {
		return nil, fmt.Errorf("write policy: %w", err)
	}
	e := &moatEnv{bin: bin, root: root, config: filepath.Join(base, "config.yaml"), stateDir: filepath.Join(base, "state"), tmp: dir}
	cfg := fmt.Sprintf("sandbox: on\nstate_dir: %s\nlog_dir: %s\ndefault_policy: %s\n", e.stateDir, filepath.Join(base, "logs"), pol)
	if err := os.WriteFile(e.config, []byte(cfg), 0o644); err != nil {
		return nil, fmt.Errorf("write admin config: %w", err)
	}
	return e, nil
}

// moat runs a moat command under the env's configuration.
func (e *moatEnv) moat(timeout time.Duration, args ...string) (string, error) {
	full := append([]string{"--root", e.root, "--config", e.config}, args...)
	return output(e.tmp, timeout, exec.Command(e.bin, full...))
}

// start runs the bundle detached as id.
func (e *moatEnv) start(bundle, id string) error {
	e.ids = append(e.ids, id)
	if _, err := e.moat(2*time.Minute, "run", "-d", "--bundle", bundle, id); err != nil {
		return fmt.Errorf("start container: %w", err)
	}
	return nil
}

// exec runs argv in the container and returns its stdout.
func (e *moatEnv) exec(id string, timeout time.Duration, argv ...string) (string, error) {
	return e.moat(timeout, append([]string{"exec", id}, argv...)...)
}

// deleteAll force-deletes every container this env started.
func (e *moatEnv) deleteAll() error {
	var errs []error
	for _, id := range e.ids {
		if _, err := e.moat(time.Minute, "delete", "--force", id); err != nil && !strings.Contains(err.Error(), "not exist") {
			errs = append(errs, err)
		}
	}
	e.ids = nil
	return errors.Join(errs...)
}

// denials is the tail of `moat denials id`, for error messages.
func (e *moatEnv) denials(id string) string {
	out, err := e.moat(time.Minute, "denials", id)
	if err != nil {
		return err.Error()
	}
	return tail(out, 1500)
}

// initPid is the container's first process as the host sees it.
func (e *moatEnv) initPid(id string) (int, error) {
	out, err := e.moat(time.Minute, "state", id)
	if err != nil {
		return 0, err
	}
	var st struct{ Pid int }
	if err := json.Unmarshal([]byte(out), &st); err != nil || st.Pid <= 0 {
		return 0, fmt.Errorf("no pid in the state of %s (%v): %s", id, err, out)
	}
	return st.Pid, nil
}

// sidecarPid reads the one sidecar.pid under the env's state directory.
func (e *moatEnv) sidecarPid() (int, error) {
	files, err := filepath.Glob(filepath.Join(e.stateDir, "networks", "*", "sidecar.pid"))
	if err != nil || len(files) != 1 {
		return 0, fmt.Errorf("want one sidecar.pid under %s, found %d (%v)", e.stateDir, len(files), err)
	}
	data, err := os.ReadFile(files[0])
	if err != nil {
		return 0, fmt.Errorf("sidecar pid: %w", err)
	}
	return strconv.Atoi(strings.TrimSpace(string(data)))
}

// memStatus is what /proc/PID/status says of a process's memory, in MiB.
type memStatus struct {
	rss, hwm, anon, file float64 // VmRSS, VmHWM, RssAnon, RssFile
}

// rss reads pid's memStatus.
func rss(pid int) (memStatus, error) {
	var m memStatus
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return m, fmt.Errorf("sidecar status: %w", err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseFloat(f[1], 64)
		switch f[0] {
		case "VmRSS:":
			m.rss = kb / 1024
		case "VmHWM:":
			m.hwm = kb / 1024
		case "RssAnon:":
			m.anon = kb / 1024
		case "RssFile:":
			m.file = kb / 1024
		}
	}
	return m, nil
}

// cpuTime is the user plus system CPU time pid has used so far.
func cpuTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("cpu time: %w", err)
	}
	// The command name may hold spaces; the fields count from after it.
	i := strings.LastIndexByte(string(data), ')')
	f := strings.Fields(string(data[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("cpu time: short /proc/%d/stat", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("cpu time: /proc/%d/stat: bad utime or stime", pid)
	}
	// USER_HZ is 100 on every Linux architecture moat runs on.
	return time.Duration(utime+stime) * 10 * time.Millisecond, nil
}

// machineBusy is the CPU time all CPUs have spent on anything but idling
// so far (/proc/stat: user, nice, system, irq, softirq and steal).
func machineBusy() (time.Duration, error) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, fmt.Errorf("machine cpu time: %w", err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, fmt.Errorf("machine cpu time: unexpected /proc/stat line %q", line)
	}
	var ticks int64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("machine cpu time: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil // USER_HZ 100
}

// makeBundle writes a busybox bundle running `sleep` whose spec joins the
// outer netns, with the client at clientInRootfs.
func makeBundle(dir, outerNetNS, client string) (string, error) {
	bundle, err := fixtures.Bundle(dir, "sleep", "100000")
	if err != nil {
		return "", fmt.Errorf("bundle: %w", err)
	}
	spec, err := fixtures.ReadSpec(bundle)
	if err != nil {
		return "", fmt.Errorf("bundle: %w", err)
	}
	spec.Root.Readonly = false
	for i := range spec.Linux.Namespaces {
		if spec.Linux.Namespaces[i].Type == "network" {
			spec.Linux.Namespaces[i].Path = outerNetNS
		}
	}
	if err := fixtures.WriteSpec(bundle, spec); err != nil {
		return "", fmt.Errorf("bundle: %w", err)
	}
	data, err := os.ReadFile(client)
	if err != nil {
		return "", fmt.Errorf("client binary: %w", err)
	}
	if err := os.WriteFile(filepath.Join(bundle, "rootfs", clientInRootfs), data, 0o755); err != nil {
		return "", fmt.Errorf("client into rootfs: %w", err)
	}
	return bundle, nil
}

// sleepers are 200 sleeping processes in the container, under one shell
// started with a detached moat exec.
type sleepers struct {
	root int // the exec'd process as moat reports it
}

// startSleepers starts them and returns once all 200 run.
func (e *moatEnv) startSleepers(id string) (*sleepers, error) {
	pidFile := filepath.Join(e.tmp, "sleepers.pid")
	_ = os.Remove(pidFile)
	if _, err := e.moat(time.Minute, "exec", "-d", "--pid-file", pidFile, id,
		"sh", "-c", "for i in $(seq 200); do sleep 300 & done; wait"); err != nil {
		return nil, fmt.Errorf("start sleepers: %w", err)
	}
	data, err := os.ReadFile(pidFile)
	if err != nil {
		return nil, fmt.Errorf("sleepers' pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("sleepers' pid: %w", err)
	}
	s := &sleepers{root: pid}
	deadline := time.Now().Add(time.Minute)
	for {
		n := 0
		for _, p := range s.tree() {
			if comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", p)); string(comm) == "sleep\n" {
				n++
			}
		}
		if n >= 200 {
			return s, nil
		}
		if time.Now().After(deadline) {
			s.stop()
			return nil, fmt.Errorf("only %d of 200 sleepers started under pid %d", n, pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// tree is the exec'd process and its descendants (host pids), parents
// first.
func (s *sleepers) tree() []int {
	pids := []int{s.root}
	for i := 0; i < len(pids); i++ {
		// A child belongs to the thread that forked it: read them all.
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/children", pids[i]))
		for _, t := range tasks {
			data, _ := os.ReadFile(t)
			for _, f := range strings.Fields(string(data)) {
				if c, err := strconv.Atoi(f); err == nil {
					pids = append(pids, c)
				}
			}
		}
	}
	return pids
}

// stop kills the exec'd process and its descendants by pid, leaves
// first, and waits until they are gone (or zombies for init to reap).
func (s *sleepers) stop() {
	pids := s.tree()
	for i := len(pids) - 1; i >= 0; i-- {
		_ = syscall.Kill(pids[i], syscall.SIGKILL)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, p := range pids {
		for !gone(p) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// gone reports whether pid has exited (a zombie counts).
func gone(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	i := strings.LastIndexByte(string(data), ')')
	return i < 0 || i+2 >= len(data) || data[i+2] == 'Z'
}

// processesIn counts the live processes in pid's pid namespace (the
// container's, moat-init and exec'd processes included).
func processesIn(pid int) int {
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", pid))
	if err != nil {
		return 0
	}
	ents, _ := os.ReadDir("/proc")
	n := 0
	for _, ent := range ents {
		p, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		if l, err := os.Readlink("/proc/" + ent.Name() + "/ns/pid"); err == nil && l == ns && !gone(p) {
			n++
		}
	}
	return n
}
