// SPDX-License-Identifier: Apache-2.0

package registry

import (
	"fmt"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/northstar-oci/northstar/agent/control"
)

// pidWatch waits on many pidfds with one epoll, so a thousand containers
// cost one goroutine, not a thousand threads.
type pidWatch struct {
	epfd, wake int
	mu         sync.Mutex // guards regs
	regs       map[int32]control.Registration
	done       chan struct{} // closed when run returns
}

func newPidWatch() (*pidWatch, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("eventfd: %w", err)
	}
	w := &pidWatch{epfd: epfd, wake: wake, regs: map[int32]control.Registration{}, done: make(chan struct{})}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wake)}); err != nil {
		unix.Close(epfd)
		unix.Close(wake)
		return nil, err
	}
	return w, nil
}

func (w *pidWatch) add(pidfd int, r control.Registration) error {
	w.mu.Lock()
	w.regs[int32(pidfd)] = r
	w.mu.Unlock()
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, pidfd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(pidfd)}); err != nil {
		w.remove(pidfd)
		return fmt.Errorf("watch pidfd: %w", err)
	}
	return nil
}

func (w *pidWatch) remove(pidfd int) {
	w.mu.Lock()
	delete(w.regs, int32(pidfd))
	w.mu.Unlock()
	_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, pidfd, nil)
}

// run calls gone with the registration of each process that exits, until
// close.
func (w *pidWatch) run(gone func(control.Registration)) {
	defer close(w.done)
	events := make([]unix.EpollEvent, 64)
	for {
		n, err := unix.EpollWait(w.epfd, events, -1)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			if ev.Fd == int32(w.wake) {
				return
			}
			w.mu.Lock()
			r, ok := w.regs[ev.Fd]
			w.mu.Unlock()
			if ok {
				gone(r)
			}
		}
	}
}

// close stops run and waits until it has returned (a gone it was running
// included), then lets the epoll and eventfd go.
func (w *pidWatch) close() {
	var one [8]byte
	one[0] = 1
	_, _ = unix.Write(w.wake, one[:])
	<-w.done
	unix.Close(w.epfd)
	unix.Close(w.wake)
}
