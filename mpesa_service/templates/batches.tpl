% rebase('layout', title='Bulk payouts')
<h2 id="upload">Upload a bulk payout file</h2>
<p>CSV or XLSX with the columns reference, user_id, phone, amount, reason, description: one row per payee, the reference unique (it is the payout's idempotency key). The file is checked first and nothing is sent; another operator approves the whole batch before its rows are sent.</p>
<form method="post" action="/console/batches/upload" enctype="multipart/form-data" id="upload-form">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <input type="file" name="file" accept=".csv,.xlsx,text/csv" required>
  <label><input type="checkbox" name="skip_bad_rows" value="1"> leave out the bad rows</label>
  <button type="submit">Check and upload</button>
</form>
% if report:
<h2 id="report">What the file holds</h2>
<p>{{report['totals']['count']}} good rows, {{money(report['totals']['amount'])}} in all, the largest {{money(report['totals']['largest'])}}.</p>
<table class="bad-rows"><tr><th>line</th><th>reference</th><th>why</th></tr>
% for bad in report['bad_rows']:
<tr><td class="num">{{bad['line']}}</td><td>{{bad['reference'] or ''}}</td><td>{{bad['reason']}}</td></tr>
% end
</table>
% end
<h2 id="list">Batches</h2>
<table><tr><th>batch</th><th>status</th><th>file</th><th>rows</th><th>total</th><th>uploaded by</th><th>decided by</th><th>uploaded</th></tr>
% for item in batches:
<tr>
  <td><a href="/console/batches/{{url(item['batch_id'])}}">{{item['batch_id']}}</a></td><td>{{item['status']}}</td>
  <td>{{item['file_name'] or ''}}</td><td class="num">{{item['row_count']}}</td><td class="num">{{money(item['total_amount'])}}</td>
  <td>{{item['created_by']}}</td><td>{{item['decided_by'] or ''}}</td><td>{{!when(item['created_at'])}}</td>
</tr>
% end
% if not batches:
<tr><td colspan="8">No batch yet.</td></tr>
% end
</table>
