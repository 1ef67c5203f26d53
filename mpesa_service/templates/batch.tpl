% rebase('layout', title='Batch ' + b['batch_id'])
% progress = b['progress']
<h2 id="batch">Batch {{b['batch_id']}}: <span id="batch-status">{{b['status']}}</span></h2>
<p>{{b['file_name'] or 'no file name'}}: {{b['row_count']}} rows, {{money(b['total_amount'])}}; uploaded by {{b['created_by']}} {{!when(b['created_at'])}}
% if b['decided_by']:
; {{'approved' if b['status'] != 'rejected' else 'rejected'}} by {{b['decided_by']}} {{!when(b['decided_at'])}}{{(': ' + b['decision_note']) if b['decision_note'] else ''}}
% end
</p>
<p><progress id="progress" value="{{progress['settled']}}" max="{{progress['rows']}}">{{progress['percent']}}%</progress>
{{progress['settled']}} of {{progress['rows']}} rows settled ({{progress['percent']}}%), {{progress['sent']}} sent.
% for status, count in sorted(b['counts'].items()):
<span class="count">{{status}}: {{count}}</span>
% end
</p>
% if b['status'] == 'awaiting_approval':
<p>Nothing is sent until an operator whose key did not upload this batch approves it. Signed in as {{operator}}.</p>
<form method="post" action="/console/batches/{{url(b['batch_id'])}}/approve" class="inline approve">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <input name="reason" placeholder="note (optional)" size="16">
  <button type="submit">Approve the batch</button>
</form>
<form method="post" action="/console/batches/{{url(b['batch_id'])}}/reject" class="inline reject">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <input name="reason" placeholder="why" required size="16">
  <button type="submit">Reject the batch</button>
</form>
% end
<p>Result file: <a href="/console/batches/{{url(b['batch_id'])}}/result.csv">CSV</a> · <a href="/console/batches/{{url(b['batch_id'])}}/result.xlsx">XLSX</a></p>
<h2 id="rows">Rows</h2>
<table><tr><th>line</th><th>reference</th><th>user</th><th>phone</th><th>amount</th><th>status</th><th>receipt</th><th>result</th></tr>
% for row in b['rows']:
<tr class="{{'failing' if row['status'] in ('failed', 'refused', 'review') else ''}}">
  <td class="num">{{row['line']}}</td>
  <td>
  % if row['sent']:
  <a href="/console/payouts/{{url(row['reference_id'])}}">{{row['reference_id']}}</a>
  % else:
  {{row['reference_id']}}
  % end
  </td>
  <td>{{row['user_id']}}</td><td>{{mask(row['phone_number'])}}</td><td class="num">{{money(row['amount'])}}</td>
  <td>{{row['status']}}</td><td>{{row['transaction_id'] or ''}}</td><td>{{row['result_meaning'] or row['result_desc'] or ''}}</td>
</tr>
% end
</table>
<h2 id="history">History</h2>
<table><tr><th>when</th><th>who</th><th>what</th><th>note</th></tr>
% for h in b['history']:
<tr><td>{{!when(h['at'])}}</td><td>{{h['actor']}}</td><td>{{h['action']}}</td><td>{{h['note'] or ''}}</td></tr>
% end
</table>
