% rebase('layout', title='Approvals')
<h2 id="approvals">Payouts awaiting approval ({{len(waiting)}})</h2>
<p>A payout above APPROVAL_ABOVE is sent only once an operator with a key other than the one that asked for it approves it. Signed in as {{operator}}: payouts your key asked for can only be decided by another operator.</p>
<table><tr><th>reference</th><th>amount</th><th>phone</th><th>user</th><th>reason</th><th>asked by</th><th>age</th><th>expires</th><th>approve</th><th>reject</th></tr>
% for item in waiting:
<tr>
  <td><a href="/console/payouts/{{url(item['reference_id'])}}">{{item['reference_id']}}</a></td>
  <td class="num">{{money(item['amount'] or 0)}}</td><td>{{item['phone']}}</td><td>{{item['user_id']}}</td>
  <td>{{item['reason']}}</td><td>{{item['created_by']}}</td><td class="num">{{item['age']}}</td><td>{{item['expires']}}</td>
  <td>
    <form method="post" action="/console/payouts/{{url(item['reference_id'])}}/approve" class="approve">
      <input type="hidden" name="csrf" value="{{csrf}}">
      <input name="reason" placeholder="note (optional)" size="16">
      <button type="submit">Approve</button>
    </form>
  </td>
  <td>
    <form method="post" action="/console/payouts/{{url(item['reference_id'])}}/reject" class="reject">
      <input type="hidden" name="csrf" value="{{csrf}}">
      <input name="reason" placeholder="why" required size="16">
      <button type="submit">Reject</button>
    </form>
  </td>
</tr>
% end
% if not waiting:
<tr><td colspan="10">Nothing awaits approval.</td></tr>
% end
</table>
<h2 id="batches">Bulk batches awaiting approval ({{len(batches)}})</h2>
<p>A bulk batch is approved or rejected whole, on its own page, by an operator whose key did not upload it.</p>
<table><tr><th>batch</th><th>file</th><th>rows</th><th>total</th><th>uploaded by</th><th>uploaded</th></tr>
% for item in batches:
<tr>
  <td><a href="/console/batches/{{url(item['batch_id'])}}">{{item['batch_id']}}</a></td>
  <td>{{item['file_name'] or ''}}</td><td class="num">{{item['row_count']}}</td>
  <td class="num">{{money(item['total_amount'])}}</td><td>{{item['created_by']}}</td><td>{{!when(item['created_at'])}}</td>
</tr>
% end
% if not batches:
<tr><td colspan="6">No batch awaits approval.</td></tr>
% end
</table>
