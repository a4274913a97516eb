package presencereader

// The requests the Reader's loop serves, one channel per kind, so that
// the loop's select names every kind and no request can be dropped
// unseen. Each kind is a small type whose invoke hands it to the loop
// and, if it has an answer, waits for it, giving up once the reader is
// dying or the caller's stop channel is closed; and whose respond, called
// from the loop, answers it without blocking (every reply channel has
// room for its one answer). Requests with no answer are done once the
// loop has taken them.

// requests holds one channel per request kind; the loop takes from each.
type requests struct {
	watch       chan reqWatch
	unwatch     chan reqUnwatch
	alive       chan reqAlive
	sync        chan reqSync
	subscribe   chan reqSubscribe
	unsubscribe chan reqUnsubscribe
	attach      chan reqAttach
	snapshot    chan reqSnapshot
	detach      chan reqDetach
	modelStats  chan reqModelStats
}

func newRequests() requests {
	return requests{
		watch:       make(chan reqWatch),
		unwatch:     make(chan reqUnwatch),
		alive:       make(chan reqAlive),
		sync:        make(chan reqSync),
		subscribe:   make(chan reqSubscribe),
		unsubscribe: make(chan reqUnsubscribe),
		attach:      make(chan reqAttach),
		snapshot:    make(chan reqSnapshot),
		detach:      make(chan reqDetach),
		modelStats:  make(chan reqModelStats),
	}
}

// send hands req to r's loop on ch. It returns false, having handed
// nothing, once r is dying or stop is closed; a nil stop never is.
func send[T any](r *Reader, ch chan<- T, req T, stop <-chan struct{}) bool {
	select {
	case ch <- req:
		return true
	case <-r.catacomb.Dying():
		return false
	case <-stop:
		return false
	}
}

// call hands req to r's loop on ch and waits for the answer on reply.
// It returns false once r is dying or stop is closed, whether or not
// the loop took req.
func call[T, R any](r *Reader, ch chan<- T, req T, reply <-chan R, stop <-chan struct{}) (R, bool) {
	var zero R
	if !send(r, ch, req, stop) {
		return zero, false
	}
	select {
	case res := <-reply:
		return res, true
	case <-r.catacomb.Dying():
		return zero, false
	case <-stop:
		return zero, false
	}
}

// reqWatch asks the loop to report key's state on ch (see View.Watch).
type reqWatch struct {
	view *View
	key  string
	ch   chan<- Change
}

// invoke hands the request to r's loop; it returns false once r is
// dying or stop is closed.
func (req reqWatch) invoke(r *Reader, stop <-chan struct{}) bool {
	return send(r, r.requests.watch, req, stop)
}

// reqUnwatch asks the loop to stop reporting key on ch (see
// View.Unwatch); it names them as a reqWatch does.
type reqUnwatch reqWatch

// invoke hands the request to r's loop; it returns false once r is
// dying or stop is closed.
func (req reqUnwatch) invoke(r *Reader, stop <-chan struct{}) bool {
	return send(r, r.requests.unwatch, req, stop)
}

// reqAlive asks whether key of model is alive. The loop holds it until
// the first load is applied (or fails).
type reqAlive struct {
	model string
	key   string
	reply chan aliveResult
}

type aliveResult struct {
	alive bool
	err   error
}

// invoke asks r's loop and waits for the answer; it returns false once r
// is dying or stop is closed.
func (req reqAlive) invoke(r *Reader, stop <-chan struct{}) (aliveResult, bool) {
	req.reply = make(chan aliveResult, 1)
	return call(r, r.requests.alive, req, req.reply, stop)
}

// respond answers the request. It never blocks, and must only be called
// from the loop goroutine, once per request.
func (req reqAlive) respond(res aliveResult) {
	req.reply <- res
}

// reqSync asks for a load. reply, when not nil, gets the outcome once the
// load has been applied, with the senders of view that it touched.
type reqSync struct {
	view  *View
	reply chan syncResult
}

type syncResult struct {
	err     error
	gen     uint64
	senders []*sender
}

// invoke asks r's loop for a load and waits for its outcome; it returns
// false once r is dying or stop is closed.
func (req reqSync) invoke(r *Reader, stop <-chan struct{}) (syncResult, bool) {
	req.reply = make(chan syncResult, 1)
	return call(r, r.requests.sync, req, req.reply, stop)
}

// start asks r's loop for a load without waiting for it; it returns
// false once r is dying or stop is closed.
func (req reqSync) start(r *Reader, stop <-chan struct{}) bool {
	req.reply = nil
	return send(r, r.requests.sync, req, stop)
}

// respond answers the request, if its caller waits. It never blocks, and
// must only be called from the loop goroutine, once per request.
func (req reqSync) respond(res syncResult) {
	if req.reply != nil {
		req.reply <- res
	}
}

// reqSubscribe registers a subscription (see View.SubscribeWith).
type reqSubscribe struct {
	sub *Subscription
}

// invoke hands the request to r's loop; it returns false once r is
// dying or stop is closed.
func (req reqSubscribe) invoke(r *Reader, stop <-chan struct{}) bool {
	return send(r, r.requests.subscribe, req, stop)
}

// reqUnsubscribe forgets a subscription (see Subscription.Close).
type reqUnsubscribe struct {
	sub *Subscription
}

// invoke hands the request to r's loop; it returns false once r is
// dying or stop is closed.
func (req reqUnsubscribe) invoke(r *Reader, stop <-chan struct{}) bool {
	return send(r, r.requests.unsubscribe, req, stop)
}

// reqAttach registers a view of model; the reply is the model's change
// log.
type reqAttach struct {
	model string
	reply chan *changeLog
}

// invoke asks r's loop for model's change log; it returns false once r
// is dying or stop is closed before the loop takes the request. Once the
// loop has taken it, invoke waits for the answer whatever r or stop do:
// the loop answers as it takes the request, and has counted the view,
// which must therefore be made, and closed.
func (req reqAttach) invoke(r *Reader, stop <-chan struct{}) (*changeLog, bool) {
	req.reply = make(chan *changeLog, 1)
	if !send(r, r.requests.attach, req, stop) {
		return nil, false
	}
	return <-req.reply, true
}

// respond answers the request. It never blocks, and must only be called
// from the loop goroutine, once per request.
func (req reqAttach) respond(l *changeLog) {
	req.reply <- l
}

// reqSnapshot asks for a snapshot of sub's keys, a reset if set.
type reqSnapshot struct {
	sub   *Subscription
	reset bool
}

// invoke hands the request to r's loop; it returns false once r is
// dying or stop is closed. The snapshot goes to the subscription itself.
func (req reqSnapshot) invoke(r *Reader, stop <-chan struct{}) bool {
	return send(r, r.requests.snapshot, req, stop)
}

// reqDetach removes everything view registered (see View.Close).
type reqDetach struct {
	view *View
	done chan struct{}
}

// invoke asks r's loop to detach the view and waits until it has, or
// until r is dying.
func (req reqDetach) invoke(r *Reader) {
	req.done = make(chan struct{})
	call(r, r.requests.detach, req, req.done, nil)
}

// respond says the view is detached. It must only be called from the
// loop goroutine, once per request.
func (req reqDetach) respond() {
	close(req.done)
}

// reqModelStats asks for what the reader knows of model (see
// View.Report).
type reqModelStats struct {
	model string
	reply chan map[string]any
}

// invoke asks r's loop and waits for the answer; it returns false once r
// is dying or stop is closed.
func (req reqModelStats) invoke(r *Reader, stop <-chan struct{}) (map[string]any, bool) {
	req.reply = make(chan map[string]any, 1)
	return call(r, r.requests.modelStats, req, req.reply, stop)
}

// respond answers the request. It never blocks, and must only be called
// from the loop goroutine, once per request.
func (req reqModelStats) respond(stats map[string]any) {
	req.reply <- stats
}
