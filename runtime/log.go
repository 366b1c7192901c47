package runtime

import (
	"fmt"
	"io"
	"os"

	"github.com/sirupsen/logrus"
)

// moat logs the way runc does because engines read the log: containerd's
// shim passes `--log FILE --log-format json` on every call and, when a
// call fails, reports the message of the last "error" entry in FILE.

// LogOptions are the global logging options.
type LogOptions struct {
	// File (--log) receives the log, appended to; "" keeps it on stderr.
	File string
	// Format (--log-format) is "text" (also "") or "json", one object
	// with "level", "msg" and "time" per line.
	Format string
	// Debug (--debug) lowers the level to debug.
	Debug bool
}

// logFile is the --log file once ConfigureLogging has opened it.
var logFile *os.File

// ConfigureLogging sets up the process-wide logger. The log file is never
// truncated: the shim hands the same file to every call for a container.
func ConfigureLogging(o LogOptions) error {
	var formatter logrus.Formatter
	switch o.Format {
	case "", "text":
	case "json":
		formatter = &logrus.JSONFormatter{}
	default:
		return fmt.Errorf("invalid log-format: %s", o.Format)
	}
	if o.Debug {
		logrus.SetLevel(logrus.DebugLevel)
	}
	if formatter != nil {
		logrus.SetFormatter(formatter)
	}
	if o.File == "" {
		return nil
	}
	f, err := os.OpenFile(o.File, os.O_WRONLY|os.O_CREATE|os.O_APPEND|os.O_SYNC, 0o644)
	if err != nil {
		return fmt.Errorf("open log file: %w", err)
	}
	logFile = f
	logrus.SetOutput(f)
	return nil
}

// ReportError records the error a command failed with: always in the
// log, and on stderr as well when the log goes to a --log file, so that a
// person running moat by hand still sees it.
func ReportError(err error, stderr io.Writer) {
	logrus.Error(err)
	if logFile != nil {
		fmt.Fprintln(stderr, err)
	}
}
