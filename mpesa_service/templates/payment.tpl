% rebase('layout', title='Collection ' + c['payment_id'])
<h2>{{'C2B payment' if c['kind'] == 'c2b' else 'Collection'}} {{c['payment_id']}}: {{c['status']}}</h2>
<table>
<tr><th>amount</th><td>{{money(c['amount'] or 0)}}</td><th>paid</th><td>{{money(c['paid_amount']) if c['paid_amount'] is not None else ''}}</td></tr>
<tr><th>phone</th><td>{{c['phone_masked']}}</td><th>CheckoutRequestID</th><td>{{c['checkout_request_id'] or ''}}</td></tr>
<tr><th>receipt</th><td>{{c['mpesa_receipt'] or ''}}</td><th>result</th><td>{{c['result_code'] or ''}} {{c['result_desc'] or ''}}</td></tr>
<tr><th>created</th><td>{{!when(c['created_at'])}}</td><th>completed</th><td>{{!when(c['completed_at'])}}</td></tr>
% if c.get('reversal_receipt'):
<tr><th>reversed by</th><td colspan="3">{{c['reversal_receipt']}}</td></tr>
% end
<tr><th>flags</th><td colspan="3">{{', '.join(c['flags']) or 'none'}}</td></tr>
</table>

% if c['reversible']:
<h2>Reverse (refund)</h2>
<p>M-Pesa sends {{money(c['paid_amount'] if c['paid_amount'] is not None else c['amount'])}} back to the customer; it is asked for once, and cannot be undone.</p>
<form method="post" action="/console/payments/{{url(c['payment_id'])}}/reverse" id="reverse">
  <input type="hidden" name="csrf" value="{{csrf}}">
  % if c['retry']:
  <input type="hidden" name="retry" value="yes">
  <p>The last reversal failed: this asks M-Pesa again, as a new attempt.</p>
  % end
  <label>Why <input name="reason" size="60" maxlength="255" required></label>
  <button type="submit">Reverse</button>
</form>
% end

<h2>Reversals</h2>
<table id="reversals"><tr><th>#</th><th>status</th><th>amount</th><th>receipt</th><th>result</th><th>reason</th><th>asked by</th></tr>
% for r in c['reversals']:
<tr><td>{{r['attempt']}}</td><td>{{r['status']}}</td><td class="num">{{money(r['amount'])}}</td><td>{{r['receipt'] or ''}}</td><td>{{r['result_code'] or ''}} {{r['result_meaning'] or ''}}</td><td>{{r['reason']}}</td><td>{{r['requested_by']}}</td></tr>
% end
</table>

<h2>Audit trail</h2>
<table id="audit"><tr><th>when</th><th>who</th><th>action</th><th>before → after</th><th>receipt</th><th>note</th></tr>
% for h in c['history']:
<tr><td>{{!when(h.created_at)}}</td><td>{{h.actor}}</td><td>{{h.action}}</td><td>{{h.status_before}} → {{h.status_after}}</td><td>{{h.receipt or ''}}</td><td>{{h.note}}</td></tr>
% end
</table>
