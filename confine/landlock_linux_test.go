package confine

import "testing"

func TestIsNvidiaDevice(t *testing.T) {
	for name, want := range map[string]bool{
		"nvidia0": true, "nvidia7": true, "nvidia12": true,
		"nvidia": false, "nvidiactl": false, "nvidia-uvm": false, "nvidia-uvm-tools": false,
		"nvidia-modeset": false, "nvidia0a": false, "nvidia1\n": false, "xnvidia0": false,
		"nvidia٣": false, "": false,
	} {
		if got := isNvidiaDevice(name); got != want {
			t.Errorf("isNvidiaDevice(%q) = %v, want %v", name, got, want)
		}
	}
}
