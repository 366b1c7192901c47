package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestArgumentCounts: a wrong number of arguments fails with status 1
// and the command's help, before any container is touched.
func TestArgumentCounts(t *testing.T) {
	for _, args := range [][]string{
		{"state"}, {"state", "a", "b"}, {"kill"}, {"kill", "a", "b", "c"}, {"exec"}, {"list", "x"}, {"features", "x"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(append([]string{"--root", t.TempDir()}, args...), &stdout, &stderr)
		if code != 1 || !strings.HasPrefix(stdout.String(), "Incorrect Usage.\n\n") || !strings.Contains(stdout.String(), " "+args[0]+" - ") {
			t.Errorf("%v: exit %d, stdout %q", args, code, stdout.String())
		}
	}
}

func TestHelpListsCommands(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"--help"}, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	for _, name := range []string{"create", "start", "run", "exec", "state", "list", "ps", "kill", "delete",
		"pause", "resume", "events", "update", "features", "spec", "checkpoint", "restore", "policy", "version"} {
		if !strings.Contains(stdout.String(), "\n     "+name+" ") && !strings.Contains(stdout.String(), "\n   "+name) {
			t.Errorf("help lacks %s:\n%s", name, stdout.String())
		}
	}
}
