"""The callback throughput machinery: how many concurrent callbacks share one fsync and one
database transaction. The rest of the service sees two things: `svc.callback_writer` (made by
`writer.callback_writer` in build_service), to which callbacks.receive_callback submits each
callback, and `writer.wait_applied(svc)`, which waits until everything submitted is applied.

How a batch flows
-----------------
1. Request. A callback's request thread, once callbacks.receive_callback has checked its
   token and sender, submits a `handoff.Delivery` (kind, body, sender, the payment its URL
   named, whether to answer only once applied) to the callback writer, a
   `groupcommit.GroupCommit`, and waits on the ticket it gets.
2. Ticket. The writer's first thread takes whatever tickets have queued, up to 64: under load,
   the requests that arrived while the previous batch was being journaled; when idle, one
   request alone, so that nothing waits for company.
3. Journal stage (`writer.journal_batch`). The batch's bodies go into the callback journal
   with one write and one fsync. Each body is parsed once, and each ticket gets a
   `handoff.Journaled` (kind, body as text, journal id, payment id, parsed body) as the
   handover to the next stage.
4. Answer. A journaled callback is durable, so its request is answered at once ("Accepted",
   or 400 if its body is not JSON) unless it asked to wait until applied (the legacy URL).
   The answered connections send the next batch while this one is applied.
5. Apply stage (`writer.apply_batch`, on a second thread holding one connection of its own,
   `writer.held_connection`). The batch is applied in one transaction
   (`writer.apply_deliveries`) that also records its journal entries as applied. The leading
   run of plain B2C successes takes the fast path (`success_batch.SuccessBatch`: one read and
   one write per table for the whole run, sent in one round trip on MySQL by
   `statements.run_together`); the others go through callbacks.CALLBACK_HANDLERS in order.
   If anything in that transaction fails, it is rolled back and each callback is applied
   alone in a transaction of its own (callbacks.apply_callback), so that one bad callback
   neither holds back nor undoes the others. While a batch's worth waits to be applied, the
   first stage waits too: a slow database slows the answers instead of piling up work.
6. Replay on failure. A callback whose own transaction fails on the database stays in the
   journal unapplied; callbacks.replay_journal (at start-up and as a job) applies it later,
   once. A request that waits until applied gets the error instead.

`waitress_server` serves the requests with a channel that the event loop leaves alone while
its request thread answers, so that the loop does not spin while the writer holds the GIL.

docs/evidence.md ("Callback ingestion" and the notes at its end) records the measurements behind
each piece."""
