% rebase('layout', title='New payout')
<h2>New payout</h2>
<p>Checked and shown back before anything is sent.</p>
<form method="post" action="/console/new-payout/check" id="new-payout">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <input type="hidden" name="key" value="{{form_key}}">
  <table>
  <tr><th><label for="user_id">user id</label></th><td><input id="user_id" name="user_id" value="{{typed.get('user_id', '')}}" required maxlength="36"></td></tr>
  <tr><th><label for="phone">phone</label></th><td><input id="phone" name="phone" value="{{typed.get('phone', '')}}" placeholder="07XX XXX XXX or 2547XXXXXXXX"></td></tr>
  <tr><th><label for="amount">amount (KES, whole shillings)</label></th><td><input id="amount" name="amount" value="{{typed.get('amount', '')}}" required inputmode="numeric"></td></tr>
  <tr><th><label for="reason">reason</label></th><td><input id="reason" name="reason" value="{{typed.get('reason', '')}}" maxlength="100" placeholder="e.g. weekly earnings"></td></tr>
  <tr><th><label for="description">description</label></th><td><input id="description" name="description" value="{{typed.get('description', '')}}" maxlength="100"></td></tr>
  </table>
  <button type="submit">Check</button>
</form>
