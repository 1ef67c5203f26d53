% rebase('layout', title='Payout ' + (p['reference_id'] or ''))
<h2>Payout {{p['reference_id']}}: {{p['status']}}</h2>
<table>
<tr><th>amount</th><td>{{money(p['amount'])}}</td><th>paid</th><td>{{p['paid_shown']}}</td></tr>
<tr><th>phone</th><td>{{p['phone_masked']}}</td><th>user</th><td>{{p['user_id']}}</td></tr>
<tr><th>receipt</th><td>{{p['transaction_id'] or ''}}</td><th>result</th><td>{{p['result_code'] or ''}} {{p['result_desc'] or ''}}</td></tr>
<tr><th>initiated</th><td>{{!when(p['initiated_at'])}}</td><th>completed</th><td>{{!when(p['completed_at'])}}</td></tr>
<tr><th>flags</th><td colspan="3">{{', '.join(p['flags']) or 'none'}}</td></tr>
</table>

% if p['status'] == 'awaiting_approval':
<h2>Awaiting approval</h2>
<p>Asked for by {{p['created_by'] or 'an unrecorded key'}}; nothing is sent until an operator with another key approves it (<a href="/console/approvals">Approvals</a>).</p>
% end
% if p['status'] in ('review', 'unknown'):
<h2>Resolve</h2>
<form method="post" action="/console/payouts/{{url(p['reference_id'])}}/resolve" id="resolve">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <label><input type="radio" name="outcome" value="paid" required> paid, receipt</label>
  <input name="receipt" size="12" placeholder="e.g. TK58QW1RTY">
  <label><input type="radio" name="outcome" value="not_paid" required> not paid (a new attempt follows)</label>
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

% if p['status'] == 'completed':
<p id="not-reversible">{{not_reversible}}.</p>
% end

<h2>Attempts</h2>
<table><tr><th>#</th><th>OriginatorConversationID</th><th>ConversationID</th><th>status</th><th>error</th><th>created</th></tr>
% for a in p['attempts']:
<tr><td>{{a['attempt_no']}}</td><td>{{a['originator_conversation_id']}}</td><td>{{a['conversation_id'] or ''}}</td><td>{{a['status']}}</td><td>{{a['error_code'] or ''}} {{a['error_message'] or ''}}</td><td>{{!when(a['created_at'])}}</td></tr>
% end
</table>

<h2>Status queries</h2>
<table><tr><th>step</th><th>sent</th><th>status</th><th>answer</th></tr>
% for query in p['queries']:
<tr><td>{{query.step}}</td><td>{{!when(query.requested_at)}}</td><td>{{query.status}}</td><td>{{query.result_code or ''}} {{query.result_desc or ''}}</td></tr>
% end
</table>

<h2>Audit trail</h2>
<table id="audit"><tr><th>when</th><th>who</th><th>action</th><th>before → after</th><th>receipt</th><th>note</th></tr>
% for h in p['history']:
<tr><td>{{!when(h['at'])}}</td><td>{{h['actor']}}</td><td>{{h['action']}}</td><td>{{h['status_before']}} → {{h['status_after']}}</td><td>{{h['receipt'] or ''}}</td><td>{{h['note']}}</td></tr>
% end
</table>

<h2>Callbacks</h2>
% for row, raw in p['callbacks']:
<p>{{!when(row.received_at)}} · {{row.kind}} · {{row.outcome}}</p>
<pre>{{raw}}</pre>
% end
