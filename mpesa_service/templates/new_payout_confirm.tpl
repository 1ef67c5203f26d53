% rebase('layout', title='Confirm payout')
<h2>Send this payout?</h2>
<table id="confirm">
<tr><th>to</th><td>{{mask(draft.request.phone)}}{{' · ' + draft.recipient if draft.recipient else ''}}</td></tr>
<tr><th>amount</th><td>KES {{money(draft.request.amount)}} ({{draft.amount_in_words}})</td></tr>
<tr><th>user</th><td>{{draft.request.user_id}}</td></tr>
<tr><th>reason</th><td>{{draft.request.reason}}</td></tr>
<tr><th>description</th><td>{{draft.request.description}}</td></tr>
</table>
% if not draft.recipient:
<p>M-Pesa has not named this phone's owner in any payout yet: check the number.</p>
% end
<form method="post" action="/console/new-payout/send" id="send">
  <input type="hidden" name="csrf" value="{{csrf}}">
  <input type="hidden" name="key" value="{{draft.key}}">
  % for name, value in draft.body.items():
  <input type="hidden" name="{{name}}" value="{{value}}">
  % end
  <button type="submit">Send KES {{money(draft.request.amount)}}</button>
</form>
<p><a href="/console/new-payout">Start again</a></p>
