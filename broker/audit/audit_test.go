package audit

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var key = bytes.Repeat([]byte{5}, 32)

func writeLog(t *testing.T, n int) (string, Head) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "audit.log")
	w, err := Open(p, key)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	for i := 0; i < n; i++ {
		if err := w.Append("token-issued", map[string]string{"sender": "client", "audience": "broker", "token_id": "0123"}); err != nil {
			t.Fatal(err)
		}
	}
	return p, w.Head()
}

func lines(t *testing.T, p string) []string {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

func verify(ls []string, k []byte, head *Head) error {
	_, err := Verify(strings.NewReader(strings.Join(ls, "\n")+"\n"), k, head)
	return err
}

func TestIntactLogVerifiesAndReopens(t *testing.T) {
	p, head := writeLog(t, 5)
	if err := verify(lines(t, p), key, &head); err != nil {
		t.Fatal(err)
	}
	w, err := Open(p, key) // continues the chain
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Append("rotated", map[string]string{"generation": "2"}); err != nil {
		t.Fatal(err)
	}
	h := w.Head()
	w.Close()
	if h.Lines != 6 {
		t.Fatalf("head after reopen %+v", h)
	}
	if err := verify(lines(t, p), key, &h); err != nil {
		t.Fatal(err)
	}
}

func TestTamperingIsDetected(t *testing.T) {
	p, head := writeLog(t, 5)
	orig := lines(t, p)
	forger := bytes.Repeat([]byte{6}, 32)
	forged, _ := line(forger, &Entry{Seq: 3, Event: "token-issued", Prev: hashOf([]byte(orig[1]))})
	tests := []struct {
		name     string
		edit     func([]string) []string
		head     *Head
		wantLine uint64
		wantErr  error
	}{
		{"an edited field", func(l []string) []string {
			l[2] = strings.Replace(l[2], `"client"`, `"mallory"`, 1)
			return l
		}, nil, 3, nil},
		{"a removed line", func(l []string) []string { return append(l[:1:1], l[2:]...) }, nil, 2, nil},
		{"two lines swapped", func(l []string) []string { l[1], l[2] = l[2], l[1]; return l }, nil, 2, nil},
		{"a line written without the key", func(l []string) []string { l[2] = string(forged); return l }, nil, 3, nil},
		{"a duplicated line", func(l []string) []string { return append(l[:3:3], l[2:]...) }, nil, 4, nil},
		{"the tail cut off, against the head", func(l []string) []string { return l[:3] }, &head, 0, ErrTruncated},
		{"four of five lines, against the head", func(l []string) []string { return l[:4] }, &head, 0, ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := verify(tt.edit(append([]string(nil), orig...)), key, tt.head)
			var bad *BadLineError
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("Verify = %v, want %v", err, tt.wantErr)
				}
			case !errors.As(err, &bad) || bad.Line != tt.wantLine:
				t.Fatalf("Verify = %v, want line %d named", err, tt.wantLine)
			}
			t.Logf("%v", err)
		})
	}
	// Without a head, a cut tail is a valid shorter log: the documented limit.
	if err := verify(orig[:3], key, nil); err != nil {
		t.Errorf("a cut log without a head: %v", err)
	}
	// The wrong key fails at line 1.
	var bad *BadLineError
	if err := verify(orig, bytes.Repeat([]byte{9}, 32), nil); !errors.As(err, &bad) || bad.Line != 1 {
		t.Errorf("wrong key: %v", err)
	}
}

func TestOpenRefusesATamperedLog(t *testing.T) {
	p, _ := writeLog(t, 3)
	l := lines(t, p)
	l[1] = strings.Replace(l[1], "broker", "brokeR", 1)
	if err := os.WriteFile(p, []byte(strings.Join(l, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(p, key); err == nil {
		t.Fatal("Open extended a log that does not verify")
	}
}

func FuzzVerify(f *testing.F) {
	f.Add([]byte(""))
	l, _ := line(key, &Entry{Seq: 1, Event: "x"})
	f.Add(append(l, '\n'))
	f.Add([]byte(`{"seq":1,"mac":"00"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		head, err := Verify(bytes.NewReader(data), key, nil)
		if err == nil && head.Lines > 0 && head.Hash == "" {
			t.Fatal("verified lines without a hash")
		}
	})
}

func TestSyncEvery(t *testing.T) {
	p := filepath.Join(t.TempDir(), "audit.log")
	w, err := Open(p, key)
	if err != nil {
		t.Fatal(err)
	}
	w.SyncEvery(10 * time.Millisecond)
	for i := 0; i < 20; i++ {
		if err := w.Append("token-issued", nil); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(30 * time.Millisecond)
	head := w.Head()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := verify(lines(t, p), key, &head); err != nil || head.Lines != 20 {
		t.Fatalf("after batched syncs: %v (%d lines)", err, head.Lines)
	}
}
