package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/moatsandbox/moat/test/fixtures"
)

// TestSandboxTTYJobControl: a terminal session under moat-init (reap mode,
// `docker run -it` style) keeps job control: the shell owns the terminal's
// foreground process group, Ctrl-Z stops a foreground job and the shell
// reports it, and the stopped job resumes with fg.
func TestSandboxTTYJobControl(t *testing.T) {
	e := newSandboxEnv(t, sandboxPolicy)
	bundle := sandboxBundle(t, "sh", "-i")
	spec, err := fixtures.ReadSpec(bundle)
	if err != nil {
		t.Fatal(err)
	}
	spec.Process.Terminal = true
	spec.Process.Env = append(spec.Process.Env, "PS1=moat$ ")
	if err := fixtures.WriteSpec(bundle, spec); err != nil {
		t.Fatal(err)
	}
	id := e.id("tty")
	cs := newConsoleReceiver(t)
	e.mustMoat("create", "--bundle", bundle, "--console-socket", cs.path, id)
	master := cs.master(t)
	e.mustMoat("start", id)
	if out := readUntil(t, master, "moat$ "); !strings.Contains(out, "moat$ ") {
		t.Fatalf("no prompt: %q", out)
	}
	send := func(s string) {
		t.Helper()
		if _, err := master.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	// The terminal echoes input, so markers are computed by the shell:
	// "echo done-$((40+2))" prints done-42, which the echo does not show.
	// The probe's process group is the terminal's foreground group.
	send("probe fg; echo fg-$((40+2))\n")
	if out := readUntil(t, master, "fg-42"); !strings.Contains(out, "\nforeground") {
		t.Errorf("a foreground command is not in the terminal's foreground group: %q", out)
	}
	send("sleep 100\n")
	time.Sleep(300 * time.Millisecond)
	send("\x1a") // Ctrl-Z
	if out := readUntil(t, master, "Stopped"); !strings.Contains(out, "Stopped") {
		t.Fatalf("Ctrl-Z did not stop the job: %q", out)
	}
	send("jobs; echo jobs-$((40+2))\n")
	if out := readUntil(t, master, "jobs-42"); !strings.Contains(out, "Stopped") || !strings.Contains(out, "sleep 100") {
		t.Errorf("jobs: %q", out)
	}
	// fg resumes the job; it then dies of the SIGTERM sent while stopped.
	send("kill %1; fg; echo resumed-$((40+2))-$?\n")
	if out := readUntil(t, master, "resumed-42"); !strings.Contains(out, "resumed-42-143") {
		t.Errorf("fg: %q", out)
	}
	send("exit\n")
	e.waitStatus(id, "stopped")
	e.mustMoat("delete", id)
}
