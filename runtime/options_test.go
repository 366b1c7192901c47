package runtime

import (
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/cgroups"
	"github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func TestParseCgroupArgs(t *testing.T) {
	tests := []struct {
		args []string
		want map[string]string
		err  string
	}{
		{nil, nil, ""},
		{[]string{"sub"}, map[string]string{"": "sub"}, ""},
		{[]string{"cpu,memory:a", "pids:b"}, map[string]string{"cpu": "a", "memory": "a", "pids": "b"}, ""},
		{[]string{"a", "b"}, nil, "invalid --cgroup argument: a (missing <controller>: prefix)"},
		{[]string{",cpu:a"}, nil, "invalid --cgroup argument: ,cpu:a (empty <controller> prefix)"},
		{[]string{"cpu:a", "cpu:b"}, nil, "invalid --cgroup argument(s): controller cpu specified multiple times"},
	}
	for _, tt := range tests {
		got, err := parseCgroupArgs(tt.args)
		if tt.err != "" {
			if err == nil || err.Error() != tt.err {
				t.Errorf("%q: err = %v, want %q", tt.args, err, tt.err)
			}
			continue
		}
		if err != nil || !maps.Equal(got, tt.want) {
			t.Errorf("%q = %v, %v; want %v", tt.args, got, err, tt.want)
		}
	}
}

func TestToRlimits(t *testing.T) {
	got, err := toRlimits([]specs.POSIXRlimit{{Type: "RLIMIT_NOFILE", Hard: 9, Soft: 8}, {Type: "RLIMIT_RTTIME", Hard: 1}})
	if err != nil || len(got) != 2 || got[0].Type != unix.RLIMIT_NOFILE || got[0].Soft != 8 || got[0].Hard != 9 || got[1].Type != unix.RLIMIT_RTTIME {
		t.Errorf("toRlimits = %+v, %v", got, err)
	}
	for _, bad := range []string{"NOFILE", "RLIMIT_NOPE", "RLIMIT_"} {
		if _, err := toRlimits([]specs.POSIXRlimit{{Type: bad}}); err == nil || err.Error() != "wrong rlimit value: "+bad {
			t.Errorf("%s: err = %v", bad, err)
		}
	}
}

func TestCheckProcess(t *testing.T) {
	ok := specs.Process{Args: []string{"true"}, Cwd: "/"}
	for _, tt := range []struct {
		edit func(*specs.Process)
		want string
	}{
		{func(*specs.Process) {}, ""},
		{func(p *specs.Process) { p.Cwd = "" }, "Cwd property must not be empty"},
		{func(p *specs.Process) { p.Cwd = "tmp" }, "Cwd must be an absolute path"},
		{func(p *specs.Process) { p.Args = nil }, "args must not be empty"},
	} {
		p := ok
		tt.edit(&p)
		if err := checkProcess(&p); (err == nil) != (tt.want == "") || err != nil && err.Error() != tt.want {
			t.Errorf("checkProcess(%+v) = %v, want %q", p, err, tt.want)
		}
	}
	if err := checkProcess(nil); err == nil || err.Error() != "process property must not be empty" {
		t.Errorf("checkProcess(nil) = %v", err)
	}
}

func TestExecApply(t *testing.T) {
	nnp := true
	o := ExecOpts{Args: []string{"ls"}, Cwd: "/tmp", Env: []string{"B=2"}, User: "7:8", AdditionalGIDs: []int64{9},
		Caps: []string{"CAP_NET_RAW"}, NoNewPrivs: &nnp, TTY: true}
	p := &specs.Process{Args: []string{"sh"}, Cwd: "/", Env: []string{"A=1"}, Terminal: false,
		Capabilities: &specs.LinuxCapabilities{Inheritable: []string{}}}
	if err := o.apply(p); err != nil {
		t.Fatal(err)
	}
	c := p.Capabilities
	if !slices.Equal(p.Args, []string{"ls"}) || p.Cwd != "/tmp" || !slices.Equal(p.Env, []string{"A=1", "B=2"}) ||
		p.User.UID != 7 || p.User.GID != 8 || !slices.Equal(p.User.AdditionalGids, []uint32{9}) || !p.NoNewPrivileges || !p.Terminal ||
		len(c.Bounding) != 1 || len(c.Effective) != 1 || len(c.Permitted) != 1 || len(c.Ambient) != 1 {
		t.Errorf("apply = %+v, caps %+v", p, c)
	}
	for user, want := range map[string]string{"x": "bad uid", "1:x": "bad gid"} {
		o := ExecOpts{Args: []string{"ls"}, User: user}
		if err := o.apply(&specs.Process{}); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("--user %s: err = %v, want %s", user, err, want)
		}
	}
	o = ExecOpts{Args: []string{"ls"}, AdditionalGIDs: []int64{-1}}
	if err := o.apply(&specs.Process{}); err == nil || err.Error() != "additional-gids must be a positive number -1" {
		t.Errorf("negative gid: err = %v", err)
	}
}

func TestUpdateLimits(t *testing.T) {
	pids := 50
	o := UpdateOpts{Memory: "-1", CPUIdle: "1", CPUQuota: "5000", CPUShare: "512", MemoryReservation: "64m", BlkioWeight: 300, PidsLimit: &pids}
	res, err := o.resources()
	if err != nil {
		t.Fatal(err)
	}
	if *res.Memory.Limit != -1 || *res.Memory.Swap != 0 || *res.Memory.Reservation != 64<<20 || *res.Memory.CheckBeforeUpdate ||
		*res.CPU.Idle != 1 || *res.CPU.Shares != 512 || *res.CPU.Quota != 5000 || res.CPU.Period != nil ||
		*res.BlockIO.Weight != 300 || *res.Pids.Limit != 50 {
		t.Errorf("resources = %+v %+v %+v", res.Memory, res.CPU, res.BlockIO)
	}
	// The first bad option, in runc's order, is reported.
	o = UpdateOpts{Memory: "1x", CPUQuota: "q", CPUPeriod: "p"}
	if _, err := o.resources(); err == nil || !strings.HasPrefix(err.Error(), "invalid value for cpu-period: ") {
		t.Errorf("bad options: err = %v", err)
	}
	// cpu-idle alone gets shares 0.
	o = UpdateOpts{CPUIdle: "0"}
	if res, err := o.resources(); err != nil || res.CPU.Shares == nil || *res.CPU.Shares != 0 {
		t.Errorf("cpu-idle alone: %+v, %v", res.CPU, err)
	}
}

func TestUpdateCPUPeriodQuota(t *testing.T) {
	u64 := func(v uint64) *uint64 { return &v }
	i64 := func(v int64) *int64 { return &v }
	for _, tt := range []struct {
		period     *uint64
		quota      *int64
		wantPeriod uint64
		wantQuota  int64
	}{
		{nil, nil, 0, 0},
		{u64(200), i64(300), 200, 300},
		{u64(200), nil, 200, 20},
		{nil, i64(300), 10, 300},
	} {
		r := &cgroups.Resources{CpuPeriod: 10, CpuQuota: 20}
		updateCPU(r, &specs.LinuxCPU{Period: tt.period, Quota: tt.quota})
		if r.CpuPeriod != tt.wantPeriod || r.CpuQuota != tt.wantQuota {
			t.Errorf("period %v quota %v: got %d/%d, want %d/%d", tt.period, tt.quota, r.CpuPeriod, r.CpuQuota, tt.wantPeriod, tt.wantQuota)
		}
	}
}

func TestSetDevices(t *testing.T) {
	w := func(v uint16) *uint16 { return &v }
	list := []*cgroups.WeightDevice{cgroups.NewWeightDevice(8, 0, 100, 0), cgroups.NewWeightDevice(8, 0, 200, 0)}
	list = setWeightDevice(list, specs.LinuxWeightDevice{LinuxBlockIODevice: specs.LinuxBlockIODevice{Major: 8, Minor: 0}, LeafWeight: w(50)})
	if len(list) != 2 || list[0].LeafWeight != 0 || list[1].LeafWeight != 50 || list[1].Weight != 200 {
		t.Errorf("existing weight device: %+v %+v", *list[0], *list[1])
	}
	list = setWeightDevice(list, specs.LinuxWeightDevice{LinuxBlockIODevice: specs.LinuxBlockIODevice{Major: 9, Minor: 1}, Weight: w(10)})
	if len(list) != 3 || list[2].Major != 9 || list[2].Weight != 10 {
		t.Errorf("new weight device: %+v", *list[2])
	}
	th := setThrottleDevice(nil, specs.LinuxThrottleDevice{LinuxBlockIODevice: specs.LinuxBlockIODevice{Major: 8}, Rate: 5})
	th = setThrottleDevice(th, specs.LinuxThrottleDevice{LinuxBlockIODevice: specs.LinuxBlockIODevice{Major: 8}, Rate: 7})
	if len(th) != 1 || th[0].Rate != 7 {
		t.Errorf("throttle devices: %v", th)
	}
}

func TestConsoleOptions(t *testing.T) {
	for _, tt := range []struct {
		terminal, createOnly, detach bool
		socket                       string
		want                         string
	}{
		{false, false, false, "", ""},
		{true, false, false, "", ""},
		{true, true, false, "/s", ""},
		{true, false, true, "/s", ""},
		{true, true, false, "", "cannot allocate tty if runc will detach without setting console socket"},
		{false, true, false, "/s", "cannot use console socket if runc will not detach or allocate tty"},
		{true, false, false, "/s", "cannot use console socket if runc will not detach or allocate tty"},
	} {
		l := &launch{process: &specs.Process{Terminal: tt.terminal}, createOnly: tt.createOnly, detach: tt.detach, consoleSocket: tt.socket}
		err := l.checkConsoleOptions()
		if (err == nil) != (tt.want == "") || err != nil && err.Error() != tt.want {
			t.Errorf("%+v: err = %v, want %q", tt, err, tt.want)
		}
	}
}
