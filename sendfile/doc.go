// Package sendfile will move file regions (file, position, length) from segment files to
// sockets without copying them through user space — sendfile(2), with correct handling of
// partial writes and EAGAIN — and hold the pread+write copy fallback used for tiny
// responses and for sockets that cannot take sendfile. It is a leaf package: it imports
// nothing of Gregor's.
package sendfile
