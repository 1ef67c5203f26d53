% rebase('layout', title='Payout ' + (p['reference_id'] or ''))
<h2>Payout {{p['reference_id']}}: {{p['status']}}</h2>
<table>
<tr><th>amount</th><td>{{p['amount']}}</td><th>paid</th><td>{{p['paid_amount']}}</td></tr>
<tr><th>phone</th><td>{{p['phone_masked']}}</td><th>user</th><td>{{p['user_id']}}</td></tr>
<tr><th>receipt</th><td>{{p['transaction_id'] or ''}}</td><th>result</th><td>{{p['result_code'] or ''}} {{p['result_desc'] or ''}}</td></tr>
<tr><th>initiated</th><td>{{p['initiated_at']}}</td><th>completed</th><td>{{p['completed_at'] or ''}}</td></tr>
<tr><th>flags</th><td colspan="3">{{', '.join(p['flags']) or 'none'}}</td></tr>
</table>

% if p['status'] in ('review', 'unknown'):
<h2>Resolve</h2>
<form method="post" action="/console/payouts/{{url(p['reference_id'])}}/resolve" id="resolve">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <label><input type="radio" name="outcome" value="paid" checked> paid, receipt</label>
  <input name="receipt" size="12" placeholder="e.g. TK58QW1RTY">
  <label><input type="radio" name="outcome" value="not_paid"> not paid (a new attempt follows)</label>
  <br><label>Why <input name="note" size="60" required></label>
  <button type="submit">Resolve</button>
</form>
% end
% if 'status_conflict' in p['flags']:
<form method="post" action="/console/payouts/{{url(p['reference_id'])}}/resolve">
  <input type="hidden" name="csrf" value="{{csrf}}"><input type="hidden" name="outcome" value="acknowledge">
  <label>Acknowledge the conflict: <input name="note" size="50" required></label> <button>Acknowledge</button>
</form>
% end
% if p['status'] in ('pending', 'unknown', 'review'):
<form method="post" action="/console/payouts/{{url(p['reference_id'])}}/requery" class="inline">
  <input type="hidden" name="csrf" value="{{csrf}}"><button>Ask M-Pesa again now</button>
</form>
% end

<h2>Attempts</h2>
<table><tr><th>#</th><th>OriginatorConversationID</th><th>ConversationID</th><th>status</th><th>error</th><th>created (UTC)</th></tr>
% for a in p['attempts']:
<tr><td>{{a['attempt_no']}}</td><td>{{a['originator_conversation_id']}}</td><td>{{a['conversation_id'] or ''}}</td><td>{{a['status']}}</td><td>{{a['error_code'] or ''}} {{a['error_message'] or ''}}</td><td>{{a['created_at']}}</td></tr>
% end
</table>

<h2>Status queries</h2>
<table><tr><th>step</th><th>sent (UTC)</th><th>status</th><th>answer</th></tr>
% for q in p['queries']:
<tr><td>{{q.step}}</td><td>{{q.requested_at}}</td><td>{{q.status}}</td><td>{{q.result_code or ''}} {{q.result_desc or ''}}</td></tr>
% end
</table>

<h2>Audit trail</h2>
<table id="audit"><tr><th>when (UTC)</th><th>who</th><th>action</th><th>before → after</th><th>receipt</th><th>note</th></tr>
% for h in p['history']:
<tr><td>{{h['at']}}</td><td>{{h['actor']}}</td><td>{{h['action']}}</td><td>{{h['status_before']}} → {{h['status_after']}}</td><td>{{h['receipt'] or ''}}</td><td>{{h['note']}}</td></tr>
% end
</table>

<h2>Callbacks</h2>
% for row, raw in p['callbacks']:
<p>{{row.received_at}} UTC · {{row.kind}} · {{row.outcome}}</p>
<pre>{{raw}}</pre>
% end
